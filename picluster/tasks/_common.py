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


def split_names(value: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
