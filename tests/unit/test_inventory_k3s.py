"""The inventory var the k3s stage adds: k3s_node_labels, layered and checked like the API checks labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_support import reference_data, write_inventory

from picluster.inventory import InventoryError


def test_node_labels_default_to_none_and_layer_host_over_group(tmp_path: Path) -> None:
    data = reference_data()
    data["groups"]["agent"] = {"vars": {"k3s_node_labels": {"disktype": "ssd"}}}
    data["hosts"]["node3"]["vars"] = {"k3s_node_labels": {"example.com/zone": "rack-2", "gpu": ""}}
    inv = write_inventory(tmp_path, data)
    assert inv.hosts["node1"].settings.k3s_node_labels == {}
    assert inv.hosts["node2"].settings.k3s_node_labels == {"disktype": "ssd"}
    assert inv.hosts["node3"].settings.k3s_node_labels == {"example.com/zone": "rack-2", "gpu": ""}


@pytest.mark.parametrize("labels", [["disktype=ssd"], {"bad key": "x"}, {"ok": "has space"}, {"ok": "x" * 64},
                                    {"-dash": "x"}, {"ok": ["list"]}])
def test_labels_the_api_would_reject_are_refused_with_the_key_path(tmp_path: Path, labels: object) -> None:
    data = reference_data()
    data["hosts"]["node2"]["vars"] = {"k3s_node_labels": labels}
    with pytest.raises(InventoryError, match=r"hosts\.node2\.vars\.k3s_node_labels: expected a mapping of "
                                             r"Kubernetes labels"):
        write_inventory(tmp_path, data)
