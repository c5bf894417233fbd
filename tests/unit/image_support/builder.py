"""Build a small Ubuntu-raspi-shaped disk image: MBR, FAT32 `system-boot` + ext4 `writable`."""

from __future__ import annotations

import gzip
import lzma
import os
import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from picluster.cloudinit import CMDLINE_TXT, CONFIG_TXT

MIB = 1 << 20
BOOT_START = 1 * MIB
BOOT_SIZE = 40 * MIB          # FAT32 needs >= 65525 clusters: 40 MiB of 512-byte clusters
ROOT_START = BOOT_START + BOOT_SIZE
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@dataclass(frozen=True)
class BuiltImage:
    raw: Path
    xz: Path
    boot_files: dict[str, bytes]
    root_files: dict[str, bytes]
    vmlinux: bytes
    size: int


def _noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _mbr(parts: list[tuple[int, int, int, bool]]) -> bytes:
    """An MBR sector with (type, start byte, size bytes, bootable) entries."""
    sector = bytearray(512)
    struct.pack_into("<I", sector, 440, 0x5EED1234)
    for i, (ptype, start, size, boot) in enumerate(parts):
        entry = struct.pack("<B3sB3sII", 0x80 if boot else 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff",
                            start // 512, size // 512)
        sector[446 + 16 * i: 446 + 16 * (i + 1)] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def build_raspi_image(folder: Path, *, size_mib: int = 64, boot_label: str = "system-boot",
                      name: str = "ubuntu-test-preinstalled-server-arm64+raspi") -> BuiltImage:
    """The image as `<name>.img` and `<name>.img.xz` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    size = size_mib * MIB
    root_size = size - ROOT_START
    vmlinux = _noise(1, 200_000) + b"\x00" * 100_000
    boot_files = {
        "config.txt": CONFIG_TXT.encode(),
        "cmdline.txt": CMDLINE_TXT.encode(),
        "vmlinuz": gzip.compress(vmlinux, mtime=0),
        "initrd.img": _noise(2, 120_000),
        "start4.elf": _noise(3, 64_000),
        "README": b"An image built by the picluster tests.\n",
    }
    root_files = {
        "/etc/hostname": b"ubuntu\n",
        "/etc/apt/apt.conf.d/50unattended-upgrades": b"// stock\n",
        "/usr/lib/firmware/blob.bin": _noise(4, 50_000),
    }
    work = folder / f"{name}.work"
    work.mkdir(exist_ok=True)
    fat = work / "boot.fat"
    fat.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-C", "-F", "32", "-s", "1", "-n", boot_label, str(fat), str(BOOT_SIZE // 1024)],
                   check=True, capture_output=True)
    for fname, data in boot_files.items():
        local = work / fname
        local.write_bytes(data)
        subprocess.run(["mcopy", "-i", str(fat), str(local), f"::/{fname}"], check=True, env=ENV,
                       capture_output=True)
    rootdir = work / "root"
    for fname, data in root_files.items():
        p = rootdir / fname.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    ext = work / "root.ext4"
    ext.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "writable", "-d", str(rootdir), "-E", "root_owner=0:0",
                    "-U", "6d1c0cb5-7e52-4f4e-9c5c-1b1d8d4b6a01", str(ext), f"{root_size // 1024}k"],
                   check=True, capture_output=True, env={**ENV, "E2FSPROGS_FAKE_TIME": "1700000000"})
    raw = folder / f"{name}.img"
    with open(raw, "wb") as f:
        f.truncate(size)
        f.write(_mbr([(0x0C, BOOT_START, BOOT_SIZE, True), (0x83, ROOT_START, root_size, False)]))
        # Something in the gap before the first partition, as real images have (and must keep).
        f.seek(64 * 1024)
        f.write(_noise(5, 4096))
        f.seek(BOOT_START)
        f.write(fat.read_bytes())
        f.seek(ROOT_START)
        f.write(ext.read_bytes())
    xz = folder / f"{name}.img.xz"
    xz.write_bytes(lzma.compress(raw.read_bytes(), format=lzma.FORMAT_XZ, preset=0))
    return BuiltImage(raw=raw, xz=xz, boot_files=boot_files, root_files=root_files, vmlinux=vmlinux,
                      size=size)
