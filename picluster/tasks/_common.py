"""Argument plumbing shared by the task collections: inventory loading and clean failures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.exceptions import Exit

if TYPE_CHECKING:
    from picluster.inventory import Inventory

INVENTORY_HELP = "inventory file (default: $PICLUSTER_INVENTORY, else hosts/inventory.yml)"
USAGE_ERROR = 2


def load(inventory: str | None) -> Inventory:
    """Load the inventory the user named, or fail with its one-line error and exit code 2."""
    from picluster.inventory import InventoryError, default_inventory_path, load_inventory

    try:
        return load_inventory(inventory or default_inventory_path())
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None


def require_reachable(inv: Inventory) -> None:
    """Refuse to connect to a lab inventory whose lab is not up.

    Without the lab's bridge, the lab's private addresses would be routed to whatever network this
    machine is on; no packet may leave for them.
    """
    if inv.lab is None:
        return
    import subprocess

    bridge = inv.lab.bridge
    addr = f"{inv.cluster.controller}/{inv.cluster.lan.cidr.prefixlen}"
    try:
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                               capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        shown = ""
    if f" {addr} " not in shown:
        raise Exit(f"error: the lab of {inv.path} is not running (no bridge {bridge} with {addr}); "
                   f"run `invoke lab.up --inventory {inv.path}` first", code=USAGE_ERROR)


def split_names(value: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
def positive(name: str, value: float | str) -> float:
    """A duration option as seconds (Invoke passes untyped options as text); exit 2 unless a number > 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise Exit(f"error: --{name} must be a number of seconds, not {value!r}", code=USAGE_ERROR) from None
    if seconds <= 0:
        raise Exit(f"error: --{name} must be more than 0 seconds", code=USAGE_ERROR)
    return seconds


