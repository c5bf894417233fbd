"""The gates run through testinfra: `host` is the node under test, `node` its inventory entry."""

from __future__ import annotations

import os
from typing import Any

import pytest

from picluster.inventory import Host, Inventory, load_inventory


def _load() -> Inventory:
    path = os.environ.get("PICLUSTER_INVENTORY")
    if not path:
        pytest.exit("the gates need PICLUSTER_INVENTORY; run them with `invoke check`", returncode=2)
    return load_inventory(path)


@pytest.fixture(scope="session")
def inventory() -> Inventory:
    return _load()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`admin_user` runs a check once per admin user of the inventory."""
    if "admin_user" in metafunc.fixturenames:
        users = _load().cluster.admin_users
        metafunc.parametrize("admin_user", users, ids=[u.name for u in users])


@pytest.fixture
def node(host: Any, inventory: Inventory) -> Host:
    """The inventory host that testinfra's `host` is connected to (ssh_config aliases are host names)."""
    return inventory.hosts[host.backend.get_hostname()]
