"""Tasks that put the OS on a host's disk: flash a USB disk (or an image file), or seed a mounted one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load

if TYPE_CHECKING:
    from picluster.inventory import Host, Inventory
    from picluster.stages.image.flash import Options, Report

_COMMON_HELP = {
    "host": "the inventory host to flash (its name)",
    "inventory": INVENTORY_HELP,
    "known-hosts": "known_hosts to pin the host key into (default: the inventory's, else ~/.ssh/known_hosts)",
    "cache": "cache folder for images and seeds (default: $PICLUSTER_CACHE, else ~/.cache/picluster)",
    "catalog": "image catalog (default: images.yml beside the inventory)",
}


def _host(inv: Inventory, name: str | None) -> Host:
    if not name:
        raise Exit(f"error: --host is required; hosts: {', '.join(inv.hosts)}", code=USAGE_ERROR)
    if name not in inv.hosts:
        raise Exit(f"error: {inv.path}: no host {name!r}; hosts: {', '.join(inv.hosts)}", code=USAGE_ERROR)
    return inv.hosts[name]


def _options(cache: str | None, image: str | None, sha256: str | None, verify: bool, force: bool,
             yes: bool, known_hosts: str | None, catalog: str | None) -> Options:
    from picluster.stages.image.flash import Options
    from picluster.stages.image.seed import cache_dir

    return Options(cache=cache_dir(cache), image=image, sha256=sha256, verify=verify, force=force, yes=yes,
                   known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
                   catalog=Path(catalog).expanduser() if catalog else None)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"{question} Type yes to go on: ")
    return answer.strip().lower() == "yes"


def _summary(report: Report, notes: list[str]) -> None:
    a = report.applied
    print(f"{report.target}: {report.entry.name} written ({report.written.size} bytes"
          f"{', verified' if report.verified else ''})" if report.written.size else f"{report.target}: seeded")
    print(f"  changed: {', '.join(a.changed) or 'nothing'}")
    if a.unchanged:
        print(f"  already right: {', '.join(a.unchanged)}")
    print(f"  host key pinned in {report.known_hosts}; seed kept in {report.seed_folder}")
    for note in [*a.notes, *notes]:
        print(f"  note: {note}")


@task(help={**_COMMON_HELP,
            "device": "the USB disk to overwrite, e.g. /dev/sdb (checked: not mounted, not this machine's)",
            "output": "write an image file instead of a disk",
            "image": "use this image (https URL or local .img/.img.xz) instead of the catalog's",
            "sha256": "the image's sha256 (required with an --image URL, or for a catalog entry without one)",
            "verify": "read the written image back and compare hashes (default on)",
            "force": "allow a disk that is neither removable nor USB",
            "yes": "do not ask before overwriting the disk"})
def flash(c: Context, host: str | None = None, device: str | None = None, output: str | None = None,
          image: str | None = None, sha256: str | None = None, verify: bool = True, force: bool = False,
          yes: bool = False, inventory: str | None = None, known_hosts: str | None = None,
          cache: str | None = None, catalog: str | None = None) -> None:
    """Flash a host's Ubuntu image to a USB disk (or an image file) and seed its first boot."""
    from picluster.stages.image import ImageError
    from picluster.stages.image.devices import SystemInspector
    from picluster.stages.image.flash import flash as do_flash
    from picluster.stages.image.progress import RichProgress

    inv = load(inventory)
    target = _host(inv, host)
    progress = RichProgress()
    try:
        report = do_flash(inv, target, device=device, output=output,
                          opts=_options(cache, image, sha256, verify, force, yes, known_hosts, catalog),
                          inspector=SystemInspector(), progress=progress, confirm=_ask)
    except ImageError as err:
        progress.finish()
        raise Exit(f"error: {err}", code=err.code) from None
    except KeyboardInterrupt:
        progress.finish()
        raise Exit("error: interrupted", code=130) from None
    _summary(report, [] if report.verified else ["not verified (--no-verify)"])


@task(help={**_COMMON_HELP,
            "boot-dir": "where the disk's system-boot partition is mounted",
            "root-dir": "where its writable (root) partition is mounted (for the 20.04 USB-boot apt hook)",
            "image": "the catalog image the disk holds (default: the host's)"})
def seed(c: Context, host: str | None = None, boot_dir: str | None = None, root_dir: str | None = None,
         image: str | None = None, inventory: str | None = None, known_hosts: str | None = None,
         cache: str | None = None, catalog: str | None = None) -> None:
    """Seed a disk you flashed and mounted yourself: cloud-init, cgroup flags, the 20.04 USB-boot fix."""
    from picluster.stages.image import ImageError
    from picluster.stages.image.flash import seed_dirs

    inv = load(inventory)
    target = _host(inv, host)
    if not boot_dir:
        raise Exit("error: --boot-dir is required (where system-boot is mounted)", code=USAGE_ERROR)
    try:
        report = seed_dirs(inv, target, Path(boot_dir), Path(root_dir) if root_dir else None,
                           _options(cache, image, None, False, False, True, known_hosts, catalog))
    except ImageError as err:
        raise Exit(f"error: {err}", code=err.code) from None
    _summary(report, [])
