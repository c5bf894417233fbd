"""Tasks that read the inventory: check and show it."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks._common import INVENTORY_HELP, load


@task(help={"inventory": INVENTORY_HELP}, default=True)
def check(c: Context, inventory: str | None = None) -> None:
    """Validate the inventory: exit 0 when it is usable, else one line saying what to fix and exit 2."""
    inv = load(inventory)
    roles = ", ".join(f"{h.name} ({h.role}, {h.ip})" for h in inv.hosts.values())
    print(f"{inv.path}: ok: {len(inv.hosts)} hosts: {roles}")


@task(help={"inventory": INVENTORY_HELP})
def show(c: Context, inventory: str | None = None) -> None:
    """Print every host with its layered vars, as the stages will see them."""
    inv = load(inventory)
    print(f"{inv.cluster.name}  domain {inv.cluster.domain}  LAN {inv.cluster.lan.cidr}  ({inv.path})")
    for h in inv.hosts.values():
        print(f"\n{h.name}  {h.role}  {h.ip}  {h.mac}  ssh {h.ssh.user}@{h.ssh.address}:{h.ssh.port}")
        for key, value in h.vars.items():
            if value not in (None, ()):
                print(f"    {key}: {value}")
