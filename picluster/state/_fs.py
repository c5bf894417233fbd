"""Shared by the file-like primitives: probes for stat and content, the atomic write, text diffs."""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from picluster.remote import Command, ProbeOutput, StepError

q = shlex.quote


@dataclass(frozen=True)
class PathStat:
    """What `stat` says about a path."""

    kind: str
    mode: int
    owner: str
    group: str

    @property
    def is_file(self) -> bool:
        """Return whether the path is a regular file."""
        return self.kind.startswith("regular")


def stat_probe(path: str) -> str:
    """Return the probe whose output `parse_stat` reads (exit code 1 when the path is missing)."""
    return f"stat -c '%F|%a|%U|%G' -- {q(path)}"


def parse_stat(out: ProbeOutput) -> PathStat | None:
    """Return the path's stat, or None if it does not exist."""
    if not out.ok:
        return None
    kind, mode, owner, group = out.stdout.strip().split("|")
    return PathStat(kind, int(mode, 8), owner, group)


def content_probe(path: str) -> str:
    """Return the probe that prints a file's exact bytes, base64-encoded (exit code 1 when missing)."""
    return f"base64 -w0 -- {q(path)}"


def parse_content(out: ProbeOutput, path: str) -> bytes | None:
    """Return the file's bytes, or None if it does not exist."""
    if not out.ok:
        return None
    try:
        return base64.b64decode(out.stdout.strip(), validate=True)
    except binascii.Error as e:
        raise StepError(f"could not read {path}: {e}") from e


def chown_spec(owner: str | None, group: str | None) -> str | None:
    """Return `owner:group` for chown, or None when neither is managed."""
    if owner is None and group is None:
        return None
    return f"{owner or ''}:{group}" if group else f"{owner}"


def attr_commands(target: str, mode: int | None, owner: str | None, group: str | None) -> list[str]:
    """Return chown/chmod lines for `target` (already quoted); unmanaged attributes are left out."""
    lines = []
    spec = chown_spec(owner, group)
    if spec is not None:
        lines.append(f"chown -- {q(spec)} {target}")
    if mode is not None:
        lines.append(f"chmod -- {mode:o} {target}")
    return lines


def write_command(
    path: str, data: bytes | Path, *, mode: int | None, owner: str | None, group: str | None,
    check: str | None = None
) -> Command:
    """Return the command that atomically replaces `path` with `data`, passed base64 on stdin.

    `data` is the content, or a local file whose content is streamed (never read into memory whole).

    The new file is written beside the old one (mode 0600 while written), its sha256 compared with the
    content's, and only then renamed over it: a transfer cut or truncated on the way leaves the old file
    and fails. Once the content is whole, losing the session (hang-up, closed pipes) no longer stops the
    install. Attributes not managed here are copied from the old file, when there is one. Missing parent
    directories are created. With `check` (a shell command with `{path}` where the candidate file goes),
    the new file replaces the old one only when the check passes.
    """
    p = q(path)
    parent = path.rsplit("/", 1)[0] or "/"
    digest = sha256_of(data)
    lines = [
        "set -e",
        "trap '' HUP PIPE",   # a session that goes away neither stops the install nor leaves the temporary file
        f"mkdir -p -- {q(parent)}",  # a missing parent is made 0755 root, like `install -D`
        f"tmp=$(mktemp -- {q(path + '.picluster-XXXXXX')})",
        "trap 'rm -f -- \"$tmp\"' EXIT",
        'base64 -d > "$tmp"',
        f'[ "$(sha256sum < "$tmp")" = {q(digest + "  -")} ] || {{ printf \'%s\\n\' '
        + q(f"rejected: the new {path} arrived incomplete (sha256 differs); the old one stays") + " >&2; exit 1; }",
        f'if [ -e {p} ]; then chown --reference={p} -- "$tmp"; chmod --reference={p} -- "$tmp"; fi',
        *attr_commands('"$tmp"', mode, owner, group),
    ]
    if check is not None:
        lines.append(check.replace("{path}", '"$tmp"') + " >&2 || { printf '%s\\n' "
                     + q(f"rejected: the new {path} does not pass its check; the old one stays") + " >&2; exit 1; }")
    lines.append(f'mv -f -- "$tmp" {p}')
    if isinstance(data, Path):
        return Command("\n".join(lines), stdin_file=data)
    return Command("\n".join(lines), stdin=base64.b64encode(data) + b"\n")


def sha256_of(data: bytes | Path) -> str:
    """Return the hex sha256 of `data`, or of the local file it names (read in pieces)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with data.open("rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def rewrite_command(path: str, old: bytes | None, data: bytes, *, mode: int | None = 0o644,
                    owner: str | None = "root", group: str | None = "root") -> Command:
    """Return the write of `data` over `path`: a new file (`old` None) gets these attributes, an existing one
    keeps its own."""
    if old is None:
        return write_command(path, data, mode=mode, owner=owner, group=group)
    return write_command(path, data, mode=None, owner=None, group=None)


def as_text(data: bytes) -> str:
    """Decode file bytes without losing any (undecodable bytes survive a round trip)."""
    return data.decode("utf-8", "surrogateescape")


def as_bytes(text: str) -> bytes:
    """Encode text made by `as_text` back to the same bytes."""
    return text.encode("utf-8", "surrogateescape")


def text_diff(path: str, old: bytes | None, new: bytes) -> str:
    """Return a unified diff between two versions of a file (old None: the file is created)."""
    before = [] if old is None else old.decode("utf-8", "replace").splitlines(keepends=True)
    after = new.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(before, after, "/dev/null" if old is None else path, path)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).rstrip("\n")


def attr_diff(path: str, st: PathStat, mode: int | None, owner: str | None, group: str | None) -> list[str]:
    """Return one line per attribute of `path` that differs from what is wanted."""
    out = []
    if mode is not None and st.mode != mode:
        out.append(f"mode of {path}: {st.mode:04o} -> {mode:04o}")
    if owner is not None and st.owner != owner:
        out.append(f"owner of {path}: {st.owner} -> {owner}")
    if group is not None and st.group != group:
        out.append(f"group of {path}: {st.group} -> {group}")
    return out


def single_line(value: str, what: str) -> str:
    """Return `value`, or raise ValueError if it spans lines (it must stay one line in a file)."""
    if re.search(r"[\n\r]", value):
        raise ValueError(f"{what} must be a single line, got {value!r}")
    return value
