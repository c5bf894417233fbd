"""The reference inventory (hosts/inventory.yml) with a literal key, so plans can be built on any machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from picluster.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl picluster@controller"


def reference_data() -> dict[str, Any]:
    """Return hosts/inventory.yml as data, its key files replaced by one literal key."""
    data: dict[str, Any] = yaml.safe_load((REPO / "hosts" / "inventory.yml").read_text(encoding="utf-8"))
    for user in data["cluster"]["admin_users"]:
        user.pop("ssh_key_files", None)
        user["ssh_keys"] = [KEY]
    return data


def write_inventory(tmp: Path, data: dict[str, Any], name: str = "inventory.yml") -> Inventory:
    """Write `data` as an inventory file in `tmp` and load it."""
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_inventory(path)
