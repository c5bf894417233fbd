"""Files of the ext4 root partition (`writable`) without mounting it: debugfs, addressed by byte offset."""

from __future__ import annotations

import os
import posixpath
import tempfile

from picluster.stages.image import ImageError
from picluster.stages.image.bootfs import OneAtATime, plain_link, run_tool


class ExtPartition(OneAtATime):
    """The ext2/3/4 file system that starts `offset` bytes into `disk`."""

    def __init__(self, disk: str, offset: int) -> None:
        self.disk, self.offset = disk, offset
        self.where = f"{disk} (ext4 at byte {offset})"

    def _debugfs(self, link: str, *args: str, write: bool = False) -> tuple[str, str]:
        argv = ["debugfs", *(["-w"] if write else []), *args, f"{link}?offset={self.offset}"]
        out = run_tool(argv, "e2fsprogs")
        stdout, stderr = out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace")
        if out.returncode != 0 or "Could not open" in stderr or "Bad magic" in stderr:
            raise ImageError(f"debugfs cannot open {self.where}: {_first_error(stderr)}", code=1)
        return stdout, stderr

    def read(self, name: str) -> bytes | None:
        with plain_link(self.disk) as link:
            _out, err = self._debugfs(link, "-R", f"stat {_quote(name)}")
            if "File not found" in err:
                return None
            with tempfile.TemporaryDirectory(prefix="picluster-") as tmp:
                local = os.path.join(tmp, "file")
                self._debugfs(link, "-R", f"dump {_quote(name)} {_quote(local)}")
                try:
                    with open(local, "rb") as f:
                        return f.read()
                except FileNotFoundError:
                    raise ImageError(f"cannot read {name} from {self.where}", code=1) from None

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace (or create) `name` (its folder must exist), owned by root with `mode`; read back to check."""
        folder, base = posixpath.split(name)
        with plain_link(self.disk) as link, tempfile.TemporaryDirectory(prefix="picluster-") as tmp:
            local = os.path.join(tmp, "file")
            with open(local, "wb") as f:
                f.write(data)
            commands = os.path.join(tmp, "commands")
            with open(commands, "w", encoding="utf-8") as f:
                f.write(f"cd {_quote(folder or '/')}\n")
                f.write(f"rm {_quote(base)}\n")
                f.write(f"write {_quote(local)} {_quote(base)}\n")
                f.write(f"sif {_quote(base)} mode 0{0o100000 | mode:o}\n")
                f.write(f"sif {_quote(base)} uid 0\nsif {_quote(base)} gid 0\n")
            _out, err = self._debugfs(link, "-f", commands, write=True)
            if "File not found by ext2_lookup" in err and f"cd {folder}" in err:
                raise ImageError(f"{self.where}: folder {folder} does not exist", code=1)
        if self.read(name) != data:
            raise ImageError(f"writing {name} to {self.where} did not stick: {_first_error(err)}", code=1)


def _quote(value: str) -> str:
    """A debugfs argument: double-quoted (its parser understands that), refusing quotes and newlines."""
    if any(c in value for c in '"\n\r'):
        raise ImageError(f"{value!r}: debugfs cannot take a name with quotes or newlines")
    return f'"{value}"'


def _first_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
    return lines[0][:200] if lines else "no error text"
