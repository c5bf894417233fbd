"""What the image stage puts on a host's disk, and putting it there idempotently.

Boot partition: the NoCloud seed (`user-data`, `network-config`, `meta-data`, rendered by
`picluster.cloudinit`, the same code the lab uses), the cgroup flags in `cmdline.txt` and, for Ubuntu
20.04, the USB-boot fix. Root partition: the fix's apt hook. Each file is written only when its content
differs, so a second run changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from picluster import cloudinit
from picluster.inventory import Host, Inventory, InventoryError
from picluster.sshkeys import ensure_keypair, write_private
from picluster.stages.image import ImageError, bootfix
from picluster.stages.image.bootfs import Files
from picluster.stages.image.secrets import read_secret

CACHE_ENV = "PICLUSTER_CACHE"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where images and seeds are cached: the override, $PICLUSTER_CACHE, else ~/.cache/picluster."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "picluster"


def seed_dir(cache: Path, inv: Inventory, host: Host) -> Path:
    return cache / "seed" / inv.cluster.name / host.name


@dataclass(frozen=True)
class SeedFile:
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Seed:
    """The rendered NoCloud files of one host and the host key they pin."""

    host: Host
    files: dict[str, SeedFile]
    host_key: cloudinit.HostKey


@dataclass
class Applied:
    """What a seeding run did: files written, files already right, and notes for the user."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render(inv: Inventory, host: Host, seed_folder: Path) -> Seed:
    """Render the host's seed (generating or reusing its SSH host key); ImageError on bad input."""
    wifi_password = None
    if host.wan is not None and host.wan.wifi is not None:
        wifi_password = read_secret(host.wan.wifi.password_secret)
    key = ensure_keypair(seed_folder / "ssh_host_ed25519_key", f"root@{host.name}")
    try:
        user_data = cloudinit.user_data(inv, host, host_key=key, partition_disk=True)
        network = cloudinit.network_config(inv, host, wifi_password=wifi_password)
        meta = cloudinit.meta_data(inv, host)
    except InventoryError as err:
        raise ImageError(str(err)) from None
    except ValueError as err:
        raise ImageError(f"{host.name}: {err}") from None
    return Seed(host=host, host_key=key, files={
        "user-data": SeedFile(user_data.encode(), 0o600),        # holds the host's private key
        "network-config": SeedFile(network.encode(), 0o600 if wifi_password else 0o644),
        "meta-data": SeedFile(meta.encode(), 0o644),
    })


def write_cache(seed: Seed, folder: Path) -> None:
    """Keep a copy of the seed in the cache; files with secrets are 0600, the folder 0700."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    for name, f in seed.files.items():
        write_private(folder / name, f.content.decode(), f.mode)


def _write_changed(files: Files, desired: dict[str, tuple[bytes, int]],
                   current: dict[str, bytes | None], done: Applied) -> None:
    changed = {name: d for name, d in desired.items() if current.get(name) != d[0]}
    files.write_many(changed)
    done.changed.extend(changed)
    done.unchanged.extend(name for name in desired if name not in changed)


def apply(seed: Seed, boot: Files, root: Files | None, usb_boot_fix: bool) -> Applied:
    """Put the seed, the cgroup flags and (for 20.04) the USB-boot fix onto the partitions.

    Everything is read and checked first, then only what differs is written (in one go per partition).
    """
    done = Applied()
    fix_names = ["vmlinuz", "config.txt", "vmlinux", bootfix.CHECK_FILE, bootfix.DECOMPRESS_SCRIPT]
    current = boot.read_many([*seed.files, "cmdline.txt", *(fix_names if usb_boot_fix else [])])
    cmdline = current["cmdline.txt"]
    if cmdline is None:
        raise ImageError(f"{boot.where} has no cmdline.txt; is it the system-boot partition of a raspi image?")
    desired = {name: (f.content, f.mode) for name, f in seed.files.items()}
    desired["cmdline.txt"] = (bootfix.cmdline_with_cgroups(cmdline.decode("utf-8", "replace")).encode(), 0o644)
    root_desired: dict[str, tuple[bytes, int]] = {}
    if usb_boot_fix:
        vmlinuz, config = current["vmlinuz"], current["config.txt"]
        if vmlinuz is None:
            raise ImageError(f"{boot.where} has no vmlinuz; the USB-boot fix is for Ubuntu 20.04 raspi images")
        if config is None:
            raise ImageError(f"{boot.where} has no config.txt")
        desired["vmlinux"] = (bootfix.decompress_kernel(vmlinuz), 0o644)
        desired[bootfix.CHECK_FILE] = (bootfix.check_md5(vmlinuz).encode(), 0o644)
        desired["config.txt"] = (bootfix.config_for_vmlinux(config.decode("utf-8", "replace")).encode(), 0o644)
        desired[bootfix.DECOMPRESS_SCRIPT] = (bootfix.decompress_script().encode(), 0o755)
        root_desired[bootfix.APT_HOOK] = (bootfix.apt_hook().encode(), 0o644)
    root_current = root.read_many(list(root_desired)) if root is not None else {}
    _write_changed(boot, desired, current, done)
    if root is not None:
        _write_changed(root, root_desired, root_current, done)
    elif root_desired:
        done.notes.append(f"the apt hook {bootfix.APT_HOOK} was not written (no root partition given); "
                          "without it a kernel upgrade will not boot from USB: pass --root-dir")
    return done
