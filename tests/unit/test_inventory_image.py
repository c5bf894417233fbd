"""The optional `image` var: which catalog image a host gets (host → group → all, like every var)."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_support.inventories import write_inventory

from picluster.inventory import InventoryError, load_inventory


def test_image_defaults_to_none_meaning_the_catalog_default(tmp_path: Path) -> None:
    inv = load_inventory(write_inventory(tmp_path))
    assert all(h.settings.image is None for h in inv.hosts.values())


def test_image_is_layered(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["vars"]["image"] = "ubuntu-22.04"
        data["groups"]["agent"] = {"vars": {"image": "ubuntu-24.04"}}
        data["hosts"]["node4"]["vars"] = {"image": "ubuntu-20.04"}

    inv = load_inventory(write_inventory(tmp_path, mutate=mutate))
    assert inv.hosts["gateway"].settings.image == "ubuntu-22.04"
    assert inv.hosts["node2"].settings.image == "ubuntu-24.04"
    assert inv.hosts["node4"].settings.image == "ubuntu-20.04"


def test_image_must_be_a_string(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["hosts"]["node1"]["vars"] = {"image": 2004}

    with pytest.raises(InventoryError, match=r"hosts\.node1\.vars\.image: expected an image name of hosts/images.yml"):
        load_inventory(write_inventory(tmp_path, mutate=mutate))
