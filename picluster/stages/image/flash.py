"""The whole flash of one host: image → checks → write → verify → seed → known_hosts.

Every check that can refuse runs before the first byte is written, so a refusal leaves the target as it
was. An image file target (`--output`) is written beside it under a temporary name and renamed only
when everything succeeded, so a failed run leaves an existing file untouched too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picluster.inventory import Host, Inventory
from picluster.sshkeys import pin_known_host
from picluster.stages.image import ImageError
from picluster.stages.image.bootfs import Directory, FatPartition
from picluster.stages.image.catalog import ImageEntry, catalog_path, check_sha256, load_catalog, override
from picluster.stages.image.devices import DeviceFacts, Inspector, changes, inspect, refusals
from picluster.stages.image.download import fetch
from picluster.stages.image.partitions import file_reader, find_boot, find_root
from picluster.stages.image.progress import Progress
from picluster.stages.image.rootfs import ExtPartition
from picluster.stages.image.seed import Applied, Seed, apply, render, seed_dir, write_cache
from picluster.stages.image.source import ImageSource
from picluster.stages.image.writer import Written, verify, write_image


@dataclass(frozen=True)
class Options:
    """What the user asked for beyond the host and the target."""

    cache: Path
    image: str | None = None
    sha256: str | None = None
    verify: bool = True
    force: bool = False
    yes: bool = False
    known_hosts: Path | None = None
    catalog: Path | None = None


@dataclass(frozen=True)
class Report:
    entry: ImageEntry
    target: str
    written: Written
    verified: bool
    applied: Applied
    known_hosts: Path
    seed_folder: Path
    device: DeviceFacts | None = None


def resolve_image(inv: Inventory, host: Host, opts: Options) -> ImageEntry:
    """The image for this run: `--image` if given, else the host's catalog entry."""
    wanted = host.settings.image
    catalog = None
    if opts.image is None or wanted is not None:
        catalog = load_catalog(opts.catalog or catalog_path(inv.path))
    if opts.image is None:
        assert catalog is not None
        entry = catalog.get(wanted)
        if opts.sha256:
            sha = check_sha256(opts.sha256, "--sha256")
            if entry.sha256 is not None and entry.sha256 != sha:
                raise ImageError(f"--sha256 {sha} differs from the catalog's {entry.sha256} for {entry.name}; "
                                 "fix the catalog or use --image URL --sha256")
            entry = ImageEntry(entry.name, entry.url, sha, entry.version, entry.usb_boot_fix)
        return entry
    # An override keeps the USB-boot decision of the host's catalog entry (or the default's).
    fix = catalog.get(wanted).usb_boot_fix if catalog is not None else _default_fix(inv, opts)
    return override(opts.image, opts.sha256, fix)


def _default_fix(inv: Inventory, opts: Options) -> bool:
    try:
        return load_catalog(opts.catalog or catalog_path(inv.path)).get(None).usb_boot_fix
    except ImageError:
        return False


def known_hosts_for(host: Host, opts: Options) -> Path:
    """The known_hosts to pin into: --known-hosts, the inventory's ssh_known_hosts (the lab's), or ~/.ssh's."""
    if opts.known_hosts is not None:
        return opts.known_hosts
    if host.ssh.known_hosts is not None:
        return Path(host.ssh.known_hosts)
    return Path.home() / ".ssh" / "known_hosts"


def seed_disk(disk: str, seed: Seed, usb_boot_fix: bool) -> Applied:
    """Seed the partitions of a flashed disk or image file, found by their labels, without mounting."""
    read_at = file_reader(disk)
    boot = find_boot(read_at, disk)
    root = find_root(read_at)
    if usb_boot_fix and root is None:
        raise ImageError(f"{disk} has no ext4 partition labelled writable for the USB-boot fix's apt hook")
    root_fs = ExtPartition(disk, root.offset) if root is not None else None
    return apply(seed, FatPartition(disk, boot.offset), root_fs, usb_boot_fix)


def _check_output(path: Path, size: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        raise ImageError(f"--output {path} is a block device; use --device {path} (with its safety checks)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ImageError(f"--output {path} exists and is not a regular file")
    if not path.parent.is_dir():
        raise ImageError(f"--output {path}: folder {path.parent} does not exist")
    vfs = os.statvfs(path.parent)
    free = vfs.f_bavail * vfs.f_frsize
    if free < size:
        raise ImageError(f"--output {path}: {free} bytes free in {path.parent}, the image needs {size}")


def _still_the_same(confirmed: DeviceFacts, now: DeviceFacts, size: int, force: bool) -> None:
    """Refuse unless the disk at the path is still the one the user confirmed, and still may be written."""
    changed = changes(confirmed, now)
    if changed:
        raise ImageError(f"refusing to write {confirmed.path}: it is no longer the disk you confirmed "
                         f"({'; '.join(changed)}); nothing was written, run image.flash again", code=1)
    _refuse(now, size, force)


def _refuse(facts: DeviceFacts, size: int, force: bool) -> None:
    reasons = refusals(facts, size, force)
    if reasons:
        raise ImageError(f"refusing to write {facts.path}: {'; '.join(reasons)}")


def flash(inv: Inventory, host: Host, *, device: str | None, output: str | None, opts: Options,
          inspector: Inspector, progress: Progress, confirm: Callable[[str], bool],
          session: Any = None) -> Report:
    """Flash `host`'s image to a device or an image file and seed it; see the module docstring."""
    if (device is None) == (output is None):
        raise ImageError("give exactly one target: --device /dev/sdX or --output FILE.img")
    entry = resolve_image(inv, host, opts)
    folder = seed_dir(opts.cache, inv, host)
    seed = render(inv, host, folder)
    # What can be refused without the image is refused before the download.
    facts = inspect(device, inspector) if device is not None else None
    if facts is not None:
        _refuse(facts, 0, opts.force)
    elif output is not None:
        _check_output(Path(output), 0)
    local = fetch(entry, opts.cache / "images", progress, session)
    source = ImageSource.open(local)
    find_boot(source.read_at, f"image {local.name}")

    if facts is not None:
        assert device is not None
        _refuse(facts, source.size, opts.force)
        if not opts.yes and not confirm(
                f"Write {entry.name} ({source.size} bytes) to {facts.describe()}? Everything on it is lost."):
            raise ImageError(f"not confirmed; nothing was written to {device} "
                             "(answer yes, or pass --yes when running without a terminal)", code=1)
        _still_the_same(facts, inspect(device, inspector), source.size, opts.force)
        write_path = device
    else:
        assert output is not None
        out = Path(output)
        _check_output(out, source.size)
        write_path = str(out.with_name(f".{out.name}.partial"))

    try:
        written = write_image(source, write_path, progress, create=device is None,
                              devno=facts.devno if facts is not None else "")
        if opts.verify:
            verify(write_path, written, progress)
        applied = seed_disk(write_path, seed, entry.usb_boot_fix)
    except KeyboardInterrupt:
        if device is None:
            Path(write_path).unlink(missing_ok=True)
            raise ImageError(f"interrupted; {output} was not changed", code=1) from None
        raise ImageError(f"interrupted: {device} is partly written and will not boot; "
                         "run image.flash again", code=1) from None
    except BaseException:
        if device is None:
            Path(write_path).unlink(missing_ok=True)
        raise
    if device is None:
        assert output is not None
        os.replace(write_path, output)
    target = device or str(output)
    write_cache(seed, folder)
    known = known_hosts_for(host, opts)
    pin_known_host(known, str(host.ip), host.ssh.port, seed.host_key.public)
    return Report(entry=entry, target=target, written=written, verified=opts.verify, applied=applied,
                  known_hosts=known, seed_folder=folder, device=facts)


def seed_dirs(inv: Inventory, host: Host, boot_dir: Path, root_dir: Path | None, opts: Options) -> Report:
    """Seed a boot partition the user mounted (and optionally its root partition), then pin the host key."""
    boot = Directory(boot_dir)
    root = Directory(root_dir) if root_dir is not None else None
    wanted = host.settings.image
    entry = load_catalog(opts.catalog or catalog_path(inv.path)).get(opts.image or wanted)
    folder = seed_dir(opts.cache, inv, host)
    seed = render(inv, host, folder)
    applied = apply(seed, boot, root, entry.usb_boot_fix)
    write_cache(seed, folder)
    known = known_hosts_for(host, opts)
    pin_known_host(known, str(host.ip), host.ssh.port, seed.host_key.public)
    return Report(entry=entry, target=str(boot_dir), written=Written(0, ""), verified=False,
                  applied=applied, known_hosts=known, seed_folder=folder)
