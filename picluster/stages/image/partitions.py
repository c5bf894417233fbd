"""The partition table of an image or disk (MBR) and the labels of its FAT and ext4 partitions."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from picluster.stages.image import ImageError

SECTOR = 512
BOOT_LABEL = "system-boot"
ROOT_LABEL = "writable"
_FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
_LINUX_TYPE = 0x83
_EXT_MAGIC = 0xEF53

ReadAt = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Partition:
    """One primary partition: its number (1-4), MBR type, byte offset and size."""

    number: int
    type: int
    offset: int
    size: int


def parse_mbr(sector: bytes) -> list[Partition]:
    """The used primary partitions of an MBR sector; ImageError when it is not an MBR."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise ImageError("no MBR partition table (no 0x55AA signature in the first sector)")
    parts = []
    for i in range(4):
        entry = sector[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if ptype == 0xEE:
            raise ImageError("the disk has a GPT partition table; the Ubuntu raspi images use MBR")
        if ptype and count:
            parts.append(Partition(i + 1, ptype, start * SECTOR, count * SECTOR))
    return parts


def fat_label(boot_sector: bytes) -> str | None:
    """The volume label in a FAT boot sector (FAT32 or FAT12/16), or None when it is not FAT."""
    if len(boot_sector) < SECTOR or boot_sector[510:512] != b"\x55\xaa":
        return None
    sectors_per_fat16 = struct.unpack_from("<H", boot_sector, 0x16)[0]
    at = 0x47 if sectors_per_fat16 == 0 else 0x2B
    return boot_sector[at:at + 11].decode("ascii", "replace").rstrip(" \x00")


def ext_label(superblock: bytes) -> str | None:
    """The volume name of an ext2/3/4 superblock (the 1024 bytes at offset 1024), or None."""
    if len(superblock) < 0x88 or struct.unpack_from("<H", superblock, 0x38)[0] != _EXT_MAGIC:
        return None
    return superblock[0x78:0x88].split(b"\x00", 1)[0].decode("utf-8", "replace")


def find_boot(read_at: ReadAt, what: str) -> Partition:
    """The FAT partition labelled system-boot; ImageError naming `what` when there is none."""
    for part in parse_mbr(read_at(0, SECTOR)):
        if part.type in _FAT_TYPES:
            label = fat_label(read_at(part.offset, SECTOR))
            if label is not None and label.lower() == BOOT_LABEL:
                return part
    raise ImageError(f"{what} has no {BOOT_LABEL} partition (a FAT partition labelled {BOOT_LABEL}); "
                     "is it an Ubuntu preinstalled raspi image?")


def find_root(read_at: ReadAt) -> Partition | None:
    """The ext4 partition labelled writable, if there is one."""
    for part in parse_mbr(read_at(0, SECTOR)):
        if part.type == _LINUX_TYPE and ext_label(read_at(part.offset + 1024, 1024)) == ROOT_LABEL:
            return part
    return None


def file_reader(path: str) -> ReadAt:
    """read_at over a file or block device."""
    def read_at(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    return read_at
