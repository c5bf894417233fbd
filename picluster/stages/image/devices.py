"""What a target disk is and whether we may overwrite it: facts from lsblk and the mount table.

The facts come from a pure parser (`parse_lsblk`, `parse_mounts`) over the text of
`lsblk --json` and `/proc/self/mounts`; an `Inspector` supplies those texts (the system's, or recorded
ones in tests). `refusals` decides from the facts alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from picluster.stages.image import ImageError

LSBLK_COLUMNS = "NAME,PATH,MAJ:MIN,TYPE,SIZE,MODEL,SERIAL,RM,HOTPLUG,TRAN,RO,MOUNTPOINTS"
# Mount points that make a disk part of this machine's running system: never overwritten, even with --force.
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/boot/firmware", "/usr", "/var", "/home", "[SWAP]")


@dataclass(frozen=True)
class Mount:
    source: str
    mountpoint: str


@dataclass(frozen=True)
class DeviceFacts:
    """A block device as lsblk and the mount table describe it (mounts include its partitions')."""

    path: str
    type: str
    size: int
    model: str
    serial: str
    removable: bool
    hotplug: bool
    transport: str
    read_only: bool
    mounts: tuple[Mount, ...] = ()
    devno: str = ""     # major:minor, the kernel's number for the device

    @property
    def identity(self) -> dict[str, str]:
        """What makes this the disk the user confirmed: size, serial, model and device number."""
        return {"size": str(self.size), "serial": self.serial, "model": self.model, "device number": self.devno}

    @property
    def usb(self) -> bool:
        return self.transport == "usb"

    @property
    def system_mounts(self) -> list[Mount]:
        return [m for m in self.mounts if m.mountpoint in SYSTEM_MOUNTS]

    def describe(self) -> str:
        """'/dev/sdb: SanDisk Extreme 59.6 GiB, serial 1234, usb, removable'."""
        bits = [self.model or "unknown model", _gib(self.size), f"serial {self.serial or 'unknown'}"]
        if self.transport:
            bits.append(self.transport)
        if self.removable:
            bits.append("removable")
        return f"{self.path}: {', '.join(bits)}"


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def _flag(value: Any) -> bool:
    """lsblk prints booleans as true/false (2.37+) or "0"/"1" (older)."""
    if isinstance(value, bool):
        return value
    return str(value).strip() in ("1", "true")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _walk(node: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield node
    for child in node.get("children") or []:
        yield from _walk(child)


def parse_mounts(text: str) -> list[Mount]:
    """/proc/self/mounts as (source, mount point) pairs, octal escapes decoded."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1])))
    return mounts


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_lsblk(text: str, path: str, mounts_text: str = "") -> DeviceFacts:
    """The facts of `path` from `lsblk --json --bytes -o LSBLK_COLUMNS PATH` and the mount table."""
    try:
        data = json.loads(text)
        root = data["blockdevices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ImageError(f"{path}: lsblk gave no usable answer; is it a disk?") from None
    mounts: list[Mount] = []
    paths = set()
    for node in _walk(root):
        node_path = _text(node.get("path")) or f"/dev/{_text(node.get('name'))}"
        paths.add(node_path)
        points = node.get("mountpoints")
        if points is None:
            points = [node.get("mountpoint")]
        mounts.extend(Mount(node_path, str(p)) for p in points if p)
    for m in parse_mounts(mounts_text):
        if m.source in paths and m not in mounts:
            mounts.append(m)
    return DeviceFacts(
        path=_text(root.get("path")) or path,
        type=_text(root.get("type")),
        size=int(root.get("size") or 0),
        model=_text(root.get("model")),
        serial=_text(root.get("serial")),
        removable=_flag(root.get("rm")),
        hotplug=_flag(root.get("hotplug")),
        transport=_text(root.get("tran")),
        read_only=_flag(root.get("ro")),
        mounts=tuple(mounts),
        devno=_text(root.get("maj:min")),
    )


def changes(confirmed: DeviceFacts, now: DeviceFacts) -> list[str]:
    """What differs between the disk the user confirmed and what the path is now (empty: the same disk)."""
    before, after = confirmed.identity, now.identity
    return [f"{what} {before[what] or 'unknown'} -> {after[what] or 'unknown'}"
            for what in before if before[what] != after[what]]


def refusals(facts: DeviceFacts, image_size: int, force: bool = False) -> list[str]:
    """Every reason not to write the image to this device (empty: it may be written)."""
    out = []
    system = facts.system_mounts
    if system:
        where = ", ".join(f"{m.mountpoint} ({m.source})" for m in system)
        # Decisive on its own: no advice (such as unmounting) that would help anyone overwrite it.
        return [f"{facts.path} holds this machine's {where}; it is never overwritten"]
    other = [m for m in facts.mounts if m not in system]
    if other:
        where = " ".join(sorted({m.mountpoint for m in other}))
        out.append(f"{facts.path} is mounted at {where}; unmount it first (umount {where})")
    if facts.type != "disk":
        out.append(f"{facts.path} is a {facts.type or 'non-disk'}, not a whole disk; "
                   "name the disk (e.g. /dev/sdb, not /dev/sdb1)")
    if facts.read_only:
        out.append(f"{facts.path} is read-only")
    if facts.size < image_size:
        out.append(f"{facts.path} is smaller ({facts.size} bytes, {_gib(facts.size)}) "
                   f"than the image ({image_size} bytes, {_gib(image_size)})")
    if not (facts.removable or facts.hotplug or facts.usb) and not force:
        out.append(f"{facts.path} is not a removable or USB disk ({facts.transport or 'internal'}); "
                   "pass --force if you really mean it")
    return out


class Inspector(Protocol):
    """Where device facts come from: the texts of lsblk and the mount table."""

    def lsblk(self, path: str) -> str: ...

    def mounts(self) -> str: ...


class SystemInspector:
    """This machine's lsblk and /proc/self/mounts."""

    def lsblk(self, path: str) -> str:
        import os
        import stat
        import subprocess

        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            raise ImageError(f"{path}: {err.strerror}") from None
        if not stat.S_ISBLK(mode):
            raise ImageError(f"{path} is not a block device; to write an image file use --output {path}")
        out = subprocess.run(["lsblk", "--json", "--bytes", "--output", LSBLK_COLUMNS, "--", path],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise ImageError(f"{path}: lsblk failed: {out.stderr.strip()[:200]}")
        return out.stdout

    def mounts(self) -> str:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return f.read()


def inspect(path: str, inspector: Inspector) -> DeviceFacts:
    """The facts of the disk at `path`, from the inspector's texts."""
    return parse_lsblk(inspector.lsblk(path), path, inspector.mounts())
