"""Tasks that read the inventory: check and show it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Context, task

from picluster.tasks._common import INVENTORY_HELP, load

if TYPE_CHECKING:
    from picluster.inventory import Inventory


@task(help={"inventory": INVENTORY_HELP}, default=True)
def check(c: Context, inventory: str | None = None) -> None:
    """Validate the inventory: exit 0 when it is usable, else one line saying what to fix and exit 2."""
    inv = load(inventory)
    _check_images(inv)
    roles = ", ".join(f"{h.name} ({h.role}, {h.ip})" for h in inv.hosts.values())
    devices = ", ".join(f"{d.name} ({d.ip})" for d in inv.devices.values())
    print(f"{inv.path}: ok: {len(inv.hosts)} hosts: {roles}" + (f"; devices: {devices}" if devices else ""))


def _check_images(inv: Inventory) -> None:
    """Every host's `image` names an image of the catalog beside the inventory (as image.flash will ask)."""
    named = [h for h in inv.hosts.values() if h.settings.image is not None]
    if not named:
        return
    from invoke.exceptions import Exit

    from picluster.stages.image.catalog import ImageError, catalog_path, load_catalog
    from picluster.tasks._common import USAGE_ERROR

    where = "vars.image"
    try:
        catalog = load_catalog(catalog_path(inv.path))
        for h in named:
            where = f"hosts.{h.name}: vars.image"
            catalog.get(h.settings.image)
    except ImageError as err:
        raise Exit(f"error: {inv.path}: {where}: {err}", code=USAGE_ERROR) from None


@task(help={"inventory": INVENTORY_HELP, "json": "print the cluster and every host with its layered vars as JSON"})
def show(c: Context, inventory: str | None = None, json: bool = False) -> None:
    """Print every host with its layered vars, as the stages will see them."""
    inv = load(inventory)
    if json:
        from picluster.console import print_json

        print_json(inventory_dict(inv))
        return
    print(f"{inv.cluster.name}  domain {inv.cluster.domain}  LAN {inv.cluster.lan.cidr}  ({inv.path})")
    for h in inv.hosts.values():
        print(f"\n{h.name}  {h.role}  {h.ip}  {h.mac}  ssh {h.ssh.user}@{h.ssh.address}:{h.ssh.port}")
        for key, value in h.vars.items():
            if value not in (None, ()):
                print(f"    {key}: {value}")
    for d in inv.devices.values():
        print(f"\n{d.name}  device  {d.ip}  {d.mac or '(no MAC: a DNS record only)'}")


def inventory_dict(inv: Inventory) -> dict[str, Any]:
    """The cluster's identity and every host (role, addresses, SSH target, layered vars) as JSON data."""
    hosts = {}
    for h in inv.hosts.values():
        ssh = h.ssh
        hosts[h.name] = {
            "role": h.role, "ip": str(h.ip), "mac": h.mac,
            "ssh": {"user": ssh.user, "address": ssh.address, "port": ssh.port,
                    "key_file": str(ssh.key_file) if ssh.key_file else None,
                    "known_hosts": str(ssh.known_hosts) if ssh.known_hosts else None},
            "vars": {k: v for k, v in h.vars.items() if v not in (None, ())},
        }
    return {"path": str(inv.path), "cluster": {"name": inv.cluster.name, "domain": inv.cluster.domain,
                                                "lan": str(inv.cluster.lan.cidr)},
            "hosts": hosts,
            "devices": {d.name: {"ip": str(d.ip), "mac": d.mac} for d in inv.devices.values()}}
