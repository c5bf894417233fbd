"""The `lab` tasks: a local rehearsal cluster of systemd-nspawn nodes shaped like the lab inventory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from invoke import Collection, Context, task
from invoke.exceptions import Exit

if TYPE_CHECKING:
    from picluster.lab import Lab

LAB_INVENTORY_HELP = "lab inventory (default: $PICLUSTER_LAB_INVENTORY, else hosts/lab.yml)"


AGENTS_HELP = ("N more agents (node5, node6, ...): the lab inventory grown into <lab state folder>/inventories/"
               "lab-agentsN.yml, the same lab with more nodes")


def _inventory(inventory: str | None, agents: int) -> str:
    """The lab inventory to use: the named (or default) one, or with `agents`, that one grown; errors exit 2."""
    from picluster.inventory import InventoryError
    from picluster.lab.common import LabError
    from picluster.lab.grow import grown_inventory
    from picluster.lab.lab import default_inventory_path

    path = str(inventory or default_inventory_path())
    if not agents:
        return path
    try:
        return str(grown_inventory(path, agents))
    except (InventoryError, LabError, OSError) as err:
        raise Exit(f"error: {err}", code=2) from None


def _lab(inventory: str | None, agents: int = 0) -> Lab:
    """The lab of the named inventory, with a console for progress; one-line errors, exit code 2."""
    from picluster.console import make_console
    from picluster.inventory import InventoryError
    from picluster.lab.common import LabError
    from picluster.lab.lab import Lab

    try:
        return Lab(_inventory(inventory, agents), console=make_console(stderr=True))
    except (InventoryError, LabError) as err:
        raise Exit(f"error: {err}", code=2) from None


def _fail(err: Exception) -> Exit:
    return Exit(f"error: {err}", code=1)


def _print_status(lab: Lab) -> None:
    from rich.table import Table

    from picluster.console import make_console

    table = Table("node", "state", "address", "uptime", box=None, pad_edge=False)
    for s in lab.status():
        uptime = "-" if s.uptime is None else f"{int(s.uptime) // 60}m{int(s.uptime) % 60:02d}s"
        state = "[green]running[/]" if s.state == "running" else "[red]stopped[/]"
        table.add_row(s.name, state, s.address, uptime)
    make_console().print(table)


@task(help={"inventory": LAB_INVENTORY_HELP, "agents": AGENTS_HELP})
def up(c: Context, inventory: str | None = None, agents: int = 0) -> None:
    """Bring the lab up (install prerequisites, build the base once, boot every node); no-op if running."""
    from picluster.lab.common import LabError

    lab = _lab(inventory, agents)
    try:
        lab.up()
    except LabError as err:
        raise _fail(err) from None
    _print_status(lab)
    if agents:
        print(f"lab: its inventory is {lab.inv.path} (pass it as --inventory to the other tasks)")


@task(help={"inventory": LAB_INVENTORY_HELP, "agents": AGENTS_HELP})
def inventory(c: Context, inventory: str | None = None, agents: int = 0) -> None:
    """Write the lab inventory grown by --agents N agents into the lab's state folder and print its path."""
    print(_inventory(inventory, agents))


@task(help={"inventory": LAB_INVENTORY_HELP,
            "keep_disks": "keep the nodes' disks (their overlay layers) for the next lab.up",
            "agents": AGENTS_HELP})
def down(c: Context, inventory: str | None = None, keep_disks: bool = False, agents: int = 0) -> None:
    """Remove every node, namespace, link, mount, proxy and process of the lab (also after a crash)."""
    from picluster.lab.common import LabError

    lab = _lab(inventory, agents)
    try:
        removed = lab.down(keep_disks=keep_disks)
    except LabError as err:
        raise _fail(err) from None
    print(f"lab: down ({len(removed)} things removed)" if removed else "lab: nothing was running")


@task(help={"inventory": LAB_INVENTORY_HELP, "agents": AGENTS_HELP})
def status(c: Context, inventory: str | None = None, agents: int = 0) -> None:
    """Show each lab node: state (running/stopped), address, uptime."""
    _print_status(_lab(inventory, agents))


@task(help={"host": "the node to start", "inventory": LAB_INVENTORY_HELP})
def start(c: Context, host: str, inventory: str | None = None) -> None:
    """Start a stopped lab node on its existing disk and wait until it answers SSH."""
    from picluster.lab.common import LabError

    lab = _lab(inventory)
    try:
        took = lab.start(host)
    except LabError as err:
        raise _fail(err) from None
    if took is not None:
        print(f"lab: {host} answers SSH after {took:.1f}s")


@task(help={"host": "the node to log into", "command": "run this command instead of a login shell",
            "inventory": LAB_INVENTORY_HELP})
def ssh(c: Context, host: str, command: str | None = None, inventory: str | None = None) -> None:
    """Open SSH to a lab node as the automation user (lab key, pinned host key)."""
    from picluster.lab.common import LabError

    lab = _lab(inventory)
    try:
        argv = lab.ssh_argv(host, [command] if command else [])
    except LabError as err:
        raise _fail(err) from None
    os.execvp(argv[0], argv)


ns = Collection("lab", up, down, status, start, ssh, inventory)
