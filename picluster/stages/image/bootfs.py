"""Files of the boot partition without mounting it: a FAT partition inside a disk or image file (mtools,
addressed by byte offset), or a directory where the user mounted it (`image.seed --boot-dir`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from picluster.stages.image import ImageError

_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


class Files(Protocol):
    """A flat or nested set of files that can be read and replaced."""

    where: str

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None: ...

    def read_many(self, names: list[str]) -> dict[str, bytes | None]: ...

    def write_many(self, files: dict[str, tuple[bytes, int]]) -> None: ...


class OneAtATime(ABC):
    """Files read and written one by one: `read_many` and `write_many` in terms of `read` and `write`."""

    @abstractmethod
    def read(self, name: str) -> bytes | None: ...

    @abstractmethod
    def write(self, name: str, data: bytes, mode: int = 0o644) -> None: ...

    def read_many(self, names: list[str]) -> dict[str, bytes | None]:
        return {name: self.read(name) for name in names}

    def write_many(self, files: dict[str, tuple[bytes, int]]) -> None:
        for name, (data, mode) in files.items():
            self.write(name, data, mode)


@contextmanager
def plain_link(path: str) -> Iterator[str]:
    """A path without shell or tool syntax (`@@`, `?`, spaces) that leads to `path`: a symlink in a
    private temporary folder; mtools and debugfs parse their image argument, we never let them parse ours."""
    with tempfile.TemporaryDirectory(prefix="picluster-") as tmp:
        link = os.path.join(tmp, "disk")
        os.symlink(os.path.abspath(path), link)
        yield link


def run_tool(argv: list[str], what: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a partition tool (argv only, no shell); ImageError naming it when it is missing."""
    try:
        return subprocess.run(argv, capture_output=True, input=input_bytes, timeout=300,
                              env={**os.environ, **_MTOOLS_ENV})
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} not found: install the Debian package {what} "
                         "(apt-get install mtools e2fsprogs)") from None


class FatPartition:
    """The FAT file system that starts `offset` bytes into `disk` (a device or an image file)."""

    def __init__(self, disk: str, offset: int) -> None:
        self.disk, self.offset = disk, offset
        self.where = f"{disk} (FAT at byte {offset})"

    def _image(self, link: str) -> str:
        return f"{link}@@{self.offset}"

    def names(self) -> list[str]:
        """The names in the root folder."""
        with plain_link(self.disk) as link:
            out = run_tool(["mdir", "-b", "-i", self._image(link), "::/"], "mtools")
        return [line.removeprefix("::/") for line in out.stdout.decode("utf-8", "replace").splitlines()
                if line.startswith("::/")]

    def read(self, name: str) -> bytes | None:
        return self.read_many([name])[name]

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace (or create) `name`; FAT keeps no modes."""
        self.write_many({name: (data, mode)})

    def read_many(self, names: list[str]) -> dict[str, bytes | None]:
        """Several files of the root folder in one mtools run (None for those that do not exist)."""
        if not names:
            return {}
        for name in names:
            _plain_name(name)
        with plain_link(self.disk) as link, tempfile.TemporaryDirectory(prefix="picluster-") as tmp:
            out = run_tool(["mcopy", "-n", "-i", self._image(link), *(f"::/{n}" for n in names), tmp + "/"],
                           "mtools")
            found: dict[str, bytes | None] = {}
            for name in names:
                try:
                    with open(os.path.join(tmp, name), "rb") as f:
                        found[name] = f.read()
                except FileNotFoundError:
                    found[name] = None
        errors = [line for line in out.stderr.decode("utf-8", "replace").splitlines()
                  if line.strip() and "not found" not in line]
        if out.returncode != 0 and errors:
            raise ImageError(f"cannot read from {self.where}: {errors[-1][:200]}", code=1)
        return found

    def write_many(self, files: dict[str, tuple[bytes, int]]) -> None:
        """Replace (or create) several files of the root folder in one mtools run; FAT keeps no modes."""
        if not files:
            return
        with plain_link(self.disk) as link, tempfile.TemporaryDirectory(prefix="picluster-") as tmp:
            for name, (data, _mode) in files.items():
                fd = os.open(os.path.join(tmp, _plain_name(name)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            out = run_tool(["mcopy", "-o", "-D", "o", "-i", self._image(link),
                            *(os.path.join(tmp, n) for n in files), "::/"], "mtools")
        if out.returncode != 0:
            raise ImageError(f"cannot write {', '.join(files)} to {self.where}: {_last(out.stderr)}", code=1)


class Directory(OneAtATime):
    """A mounted partition (or any folder): files under `root`."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ImageError(f"{root}: no such directory")
        self.root = root
        self.where = str(root)

    def _path(self, name: str) -> Path:
        path = (self.root / name.lstrip("/")).resolve()
        if self.root.resolve() not in path.parents:
            raise ImageError(f"{name}: outside {self.root}")
        return path

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.picluster-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, mode)
            if os.geteuid() == 0:
                os.chown(tmp, 0, 0)
        except OSError:
            pass              # a FAT mount refuses modes and owners (unless mounted with `quiet`)
        os.replace(tmp, path)


def _plain_name(name: str) -> str:
    """A file name of the boot partition's root folder (no folders, nothing a tool could parse)."""
    if not name or "/" in name or name in (".", "..") or name.startswith("-") or "\x00" in name:
        raise ImageError(f"{name!r} is not a plain file name for the boot partition")
    return name


def _last(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no error text"
