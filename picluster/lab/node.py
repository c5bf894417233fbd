"""One lab node's disk: an overlayfs upper layer over the shared base, seeded like a flashed Pi.

Before a node's first boot its upper layer receives what the image stage puts on a Pi's disk:
`/boot/firmware/{config.txt,cmdline.txt,user-data,network-config,meta-data}`, the NoCloud seed in
`/var/lib/cloud/seed/nocloud/` (so cloud-init applies it on first boot), the pinned SSH host key, and
the apt proxy setting. Files are written into the (unmounted) upper directory; parent directories get
the base's ownership and mode, so the merged view is what the base would show.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from picluster import cloudinit
from picluster.cloudinit import HostKey
from picluster.inventory import Host, Inventory
from picluster.lab.common import LabError
from picluster.localfs import write_atomic

SEED_DIR = "var/lib/cloud/seed/nocloud"
BOOT_DIR = "boot/firmware"
SECRET_FILES = {"user-data"}  # holds the host's private key


@dataclass(frozen=True)
class NodePaths:
    """Where a node's files live under the lab state folder."""

    dir: Path

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        return self.dir / "root"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def supervisor_config(self) -> Path:
        return self.dir / "supervisor.json"

    @property
    def run_state(self) -> Path:
        return self.dir / "run.json"

    @property
    def seeded(self) -> Path:
        return self.dir / "seeded"


def _mkdirs(lower: Path, upper: Path, rel: str) -> Path:
    """Create upper/rel, each new level owned and moded like the base's, or root 0755 when new there."""
    current_upper, current_lower = upper, lower
    for part in Path(rel).parts:
        current_upper, current_lower = current_upper / part, current_lower / part
        if current_upper.is_dir():
            continue
        current_upper.mkdir()
        try:
            st = current_lower.stat()
            os.chown(current_upper, st.st_uid, st.st_gid)
            os.chmod(current_upper, st.st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(current_upper, 0o755)
    return current_upper


def seed(inv: Inventory, host: Host, base: Path, paths: NodePaths, host_key: HostKey,
         proxy: tuple[IPv4Address, int], boot_files: Mapping[str, str] | None = None) -> bool:
    """Lay the node's first-boot files into its upper layer, once. Returns True when it did."""
    if paths.seeded.exists():
        return False
    for p in (paths.upper, paths.work, paths.merged):
        p.mkdir(parents=True, exist_ok=True)
    for p in (paths.upper, paths.merged):
        os.chmod(p, 0o755)
    if any(c in str(p) for p in (base, paths.upper, paths.work) for c in ",:"):
        raise LabError(f"overlayfs cannot use paths with ',' or ':' ({paths.dir}); move lab.state_dir")
    files = cloudinit.boot_partition(inv, host, host_key=host_key, partition_disk=False, static_lan=True,
                                     boot_files=boot_files)
    boot = _mkdirs(base, paths.upper, BOOT_DIR)
    seed_dir = _mkdirs(base, paths.upper, SEED_DIR)
    for name, content in files.items():
        mode = 0o600 if name in SECRET_FILES else 0o644
        write_atomic(boot / name, content, mode=mode)
        if name in cloudinit.SEED_FILES:
            write_atomic(seed_dir / name, content, mode=mode)
    ssh = _mkdirs(base, paths.upper, "etc/ssh")
    write_atomic(ssh / f"ssh_host_{host_key.kind}_key", host_key.private, mode=0o600)
    write_atomic(ssh / f"ssh_host_{host_key.kind}_key.pub", host_key.public + "\n", mode=0o644)
    _enable_locale(base, paths.upper, host.settings.locale)
    apt = _mkdirs(base, paths.upper, "etc/apt/apt.conf.d")
    address, port = proxy
    write_atomic(apt / "01proxy", f'Acquire::http::Proxy "http://{address}:{port}";\n')
    paths.seeded.write_text(str(base), encoding="utf-8")  # which base this disk was made on
    return True


def _enable_locale(base: Path, upper: Path, locale: str) -> None:
    """Uncomment `locale` in /etc/locale.gen, so cloud-init's locale module can generate it.

    Ubuntu's locale-gen (what the Pis run) generates the locale named on its command line; Debian's
    ignores arguments and builds only what /etc/locale.gen lists, so without this the locale module
    fails on a lab node.
    """
    try:
        text = (base / "etc" / "locale.gen").read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    lines = text.splitlines()
    enabled = [line for line in lines if line.split() and line.split()[0] == locale]
    if enabled:
        return
    lines = [line.lstrip("# ") if line.lstrip("# ").split()[:1] == [locale] else line for line in lines]
    if not any(line.split()[:1] == [locale] for line in lines):
        lines.append(f"{locale} {locale.split('.')[-1] if '.' in locale else 'UTF-8'}")
    write_atomic(_mkdirs(base, upper, "etc") / "locale.gen", "\n".join(lines) + "\n")


def flashed_boot_files(image: Path) -> dict[str, str]:
    """config.txt and cmdline.txt from the system-boot partition of an image file the image stage
    flashed (`invoke image.flash --host H --output <lab state>/images/H.img`)."""
    from picluster.stages.image import ImageError
    from picluster.stages.image.bootfs import FatPartition
    from picluster.stages.image.partitions import file_reader, find_boot

    try:
        part = find_boot(file_reader(str(image)), str(image))
        fat = FatPartition(str(image), part.offset)
        found = {name: fat.read(name) for name in cloudinit.BOOT_FILES}
    except (ImageError, OSError) as err:
        raise LabError(f"cannot take the boot files from {image}: {err}") from None
    return {name: data.decode("utf-8") for name, data in found.items() if data is not None}


def wipe(paths: NodePaths) -> None:
    """Remove the node's disk (its upper layer and everything else under its folder)."""
    if paths.dir.exists():
        shutil.rmtree(paths.dir)
