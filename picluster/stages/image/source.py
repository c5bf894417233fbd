"""An image file as the writer sees it: raw or xz, its uncompressed size, its bytes as a stream."""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from picluster.stages.image import ImageError

XZ_MAGIC = b"\xfd7zXZ\x00"
_FOOTER_MAGIC = b"YZ"
READ_CHUNK = 1 << 20
PEEK_LIMIT = 256 << 20


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def xz_uncompressed_size(path: Path) -> int:
    """The uncompressed size of an .xz file, read from the index of each stream (no decompression)."""
    total = 0
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            # Stream padding: NUL bytes in multiples of four between and after streams.
            while end >= 4:
                f.seek(end - 4)
                if f.read(4) != b"\x00\x00\x00\x00":
                    break
                end -= 4
            if end < 24:
                raise ValueError("too short for an xz stream")
            f.seek(end - 12)
            footer = f.read(12)
            if footer[10:12] != _FOOTER_MAGIC:
                raise ValueError("no xz stream footer")
            index_size = (struct.unpack_from("<I", footer, 4)[0] + 1) * 4
            index_start = end - 12 - index_size
            if index_start < 12:
                raise ValueError("xz index out of range")
            f.seek(index_start)
            index = f.read(index_size)
            if index[0] != 0:
                raise ValueError("no xz index indicator")
            count, pos = _varint(index, 1)
            blocks = 0
            for _ in range(count):
                unpadded, pos = _varint(index, pos)
                size, pos = _varint(index, pos)
                total += size
                blocks += (unpadded + 3) & ~3
            start = index_start - blocks - 12
            f.seek(start)
            if start < 0 or f.read(6) != XZ_MAGIC:
                raise ValueError("xz stream header not where the index says")
            end = start
    return total


@dataclass(frozen=True)
class ImageSource:
    """An image on the local disk: raw `.img` or `.img.xz`."""

    path: Path
    compressed: bool
    size: int

    @classmethod
    def open(cls, path: Path) -> ImageSource:
        """Look at the file: xz or raw, and how many bytes it will write."""
        try:
            with open(path, "rb") as f:
                head = f.read(6)
            raw_size = path.stat().st_size
        except OSError as err:
            raise ImageError(f"cannot read image {path}: {err.strerror}") from None
        if head == XZ_MAGIC:
            try:
                size = xz_uncompressed_size(path)
            except (ValueError, IndexError) as err:
                raise ImageError(f"{path} is not a complete xz file ({err}); download it again") from None
            return cls(path, True, size)
        if raw_size == 0:
            raise ImageError(f"image {path} is empty")
        return cls(path, False, raw_size)

    def read_at(self, offset: int, length: int) -> bytes:
        """Bytes of the uncompressed image (for an xz image, decompresses from the start; keep it small)."""
        if not self.compressed:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(length)
        if offset + length > PEEK_LIMIT:
            raise ImageError(f"{self.path}: will not decompress {offset + length} bytes just to peek")
        out = bytearray()
        for chunk in self.chunks(program=False):
            out += chunk
            if len(out) >= offset + length:
                break
        return bytes(out[offset:offset + length])

    def chunks(self, size: int = READ_CHUNK, program: bool = True) -> Iterator[bytes | bytearray]:
        """The uncompressed bytes in pieces of at most about `size` (decompressed on the fly).

        An xz image goes through the `xz` program when there is one (its own process, so it runs beside
        our hashing and writing, and may use several threads on a multi-block file); else through lzma.
        """
        if self.compressed and program and shutil.which("xz"):
            yield from self._xz_chunks(size)
            return
        with open(self.path, "rb") as f:
            if not self.compressed:
                while piece := f.read(size):
                    yield piece
                return
            dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            pending = b""
            while True:
                if pending:
                    data, pending = pending, b""
                elif dec.needs_input:
                    data = f.read(size // 4 or 1)
                    if not data:
                        raise ImageError(f"{self.path} ends before its xz stream does; download it again")
                else:
                    data = b""
                try:
                    out = dec.decompress(data, max_length=size)
                except lzma.LZMAError as err:
                    raise ImageError(f"{self.path} is corrupt ({err}); download it again") from None
                if out:
                    yield out
                if dec.eof:
                    # Stream padding (NULs), then maybe another stream (concatenated xz files).
                    rest = dec.unused_data.lstrip(b"\x00")
                    while not rest:
                        more = f.read(size // 4 or 1)
                        if not more:
                            return
                        rest = more.lstrip(b"\x00")
                    pending = rest
                    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def _xz_chunks(self, size: int) -> Iterator[bytes | bytearray]:
        """Full pieces of `size` bytes (the last may be shorter) read from `xz -dc`."""
        proc = subprocess.Popen(["xz", "--decompress", "--stdout", "--threads=0", "--", str(self.path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            fd = proc.stdout.fileno()
            _grow_pipe(fd)
            while True:
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    n = os.readv(fd, [view[got:]])
                    if not n:
                        break
                    got += n
                if got:
                    yield buf if got == size else bytes(view[:got])
                if got < size:
                    break
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            if proc.wait() != 0:
                raise ImageError(f"{self.path} is corrupt (xz: {err.splitlines()[-1] if err else 'failed'}); "
                                 "download it again")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe (fewer wake-ups than the default 64 KiB); fine if refused."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass
