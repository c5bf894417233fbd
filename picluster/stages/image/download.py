"""Fetch an image into the cache: resumable (HTTP Range), sha256-verified before use.

A finished download is only ever used after its sha256 matched; one that does not match is removed.
An interrupted one stays as `<name>.part` and the next run resumes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from picluster.stages.image import ImageError
from picluster.stages.image.catalog import ImageEntry
from picluster.stages.image.progress import Progress

CHUNK = 64 << 10       # small enough that little is lost when a connection breaks mid-chunk
HASH_BLOCK = 8 << 20
TIMEOUT_S = (15, 60)


def sha256_file(path: Path, progress: Progress | None = None, what: str = "checking") -> str:
    """The sha256 of a file, read in large blocks."""
    h = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        if progress is not None:
            progress.start(what, os.fstat(f.fileno()).st_size)
        while n := f.readinto(buf):
            h.update(view[:n])
            if progress is not None:
                progress.advance(n)
    if progress is not None:
        progress.finish()
    return h.hexdigest()


def _hash_prefix(path: Path) -> Any:
    h = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h


def local_image(entry: ImageEntry, progress: Progress) -> Path:
    """A local image file, checked against its sha256 when one is given."""
    path = Path(entry.url)
    if entry.sha256 is not None:
        got = sha256_file(path, progress)
        if got != entry.sha256:
            raise ImageError(f"{path}: sha256 is {got}, expected {entry.sha256}; wrong or damaged file")
    else:
        progress.note(f"note: {path} is used without a sha256 check (no --sha256 given)")
    return path


def fetch(entry: ImageEntry, cache_dir: Path, progress: Progress, session: Any = None) -> Path:
    """The verified image file in `cache_dir`, downloaded or resumed as needed."""
    if not entry.is_remote:
        return local_image(entry, progress)
    if entry.sha256 is None:
        raise ImageError(f"image {entry.name}: the catalog has no sha256 for {entry.url}; "
                         "pass --sha256 with the value from the release's SHA256SUMS")
    import requests

    cache_dir.mkdir(parents=True, exist_ok=True)
    name = Path(entry.url.split("?", 1)[0]).name or entry.name
    dest = cache_dir / name
    part = cache_dir / (name + ".part")
    if dest.exists():
        if sha256_file(dest, progress, "cached") == entry.sha256:
            return dest
        progress.note(f"{dest}: cached file does not match its sha256; removed, downloading again")
        dest.unlink()
    http = session or requests.Session()
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = http.get(entry.url, headers=headers, stream=True, timeout=TIMEOUT_S)
    except requests.RequestException as err:
        raise ImageError(f"cannot download {entry.url}: {_reason(err)}", code=1) from None
    with resp:
        if resp.status_code == 416 and have:
            # Range not satisfiable: the part file may already be the whole file; the hash decides.
            hasher = _hash_prefix(part)
            total: int | None = have
        elif resp.status_code in (200, 206):
            hasher, total = _open_range(resp, part, have)
            have = part.stat().st_size if part.exists() else 0
            try:
                with open(part, "ab") as out:
                    progress.start("download", total, have)
                    for chunk in resp.iter_content(CHUNK):
                        out.write(chunk)
                        hasher.update(chunk)
                        progress.advance(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            except (requests.RequestException, OSError) as err:
                size = part.stat().st_size if part.exists() else 0
                raise ImageError(f"download of {entry.url} interrupted at {size} of {total or '?'} bytes "
                                 f"({_reason(err)}); run again to resume", code=1) from None
            finally:
                progress.finish()
        else:
            raise ImageError(f"cannot download {entry.url}: HTTP {resp.status_code} {resp.reason}", code=1)
    size = part.stat().st_size
    if total is not None and size < total:
        raise ImageError(f"download of {entry.url} stopped at {size} of {total} bytes; run again to resume",
                         code=1)
    got = hasher.hexdigest()
    if got != entry.sha256:
        part.unlink()
        raise ImageError(f"{entry.url}: downloaded file has sha256 {got}, expected {entry.sha256}; "
                         "removed it (wrong --sha256, or a damaged or changed file)")
    os.replace(part, dest)
    return dest


def _open_range(resp: Any, part: Path, have: int) -> tuple[Any, int | None]:
    """Decide between resuming and starting over from the response; returns (hasher, total size)."""
    length = resp.headers.get("Content-Length")
    if resp.status_code == 206 and have:
        content_range = resp.headers.get("Content-Range", "")
        start_total = content_range.removeprefix("bytes ").split("/")
        start = start_total[0].split("-")[0]
        if start == str(have):
            total = int(start_total[1]) if len(start_total) == 2 and start_total[1].isdigit() else None
            return _hash_prefix(part), total
    if resp.status_code == 206:
        part.unlink(missing_ok=True)
        raise ImageError(f"{resp.url}: the server sent a range we did not ask for; run again", code=1)
    # A full response (the server ignored Range, or we had nothing): start from zero.
    part.write_bytes(b"")
    return hashlib.sha256(), int(length) if length and length.isdigit() else None


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]
