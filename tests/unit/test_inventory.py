"""Inventory validation: every rule rejects with one line naming the file, the key path and the fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from yaml_support import assert_refused, hostile

from picluster.inventory import HostSettings, InventoryError, ShutdownGrace, load_inventory

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q test@example"


def valid() -> dict[str, Any]:
    return {
        "cluster": {
            "name": "t",
            "domain": "t.example.com",
            "lan": {"cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "dhcp_range": ["10.0.0.32", "10.0.0.99"]},
            "metallb_pool": ["10.0.0.100", "10.0.0.200"],
            "controller": "10.0.0.10",
            "automation_user": "admin",
            "admin_users": [{"name": "admin", "ssh_keys": [KEY]}],
            "services": {"grafana": "10.0.0.100"},
        },
        "vars": {"timezone": "UTC"},
        "groups": {"agent": {"vars": {"ssh_port": 2222}}},
        "hosts": {
            "gateway": {"role": "gateway", "ip": "10.0.0.1", "mac": "dc:a6:32:00:00:01", "boot_disk": "/dev/sda"},
            "node1": {"role": "server", "ip": "10.0.0.11", "mac": "dc:a6:32:00:00:11", "boot_disk": "/dev/sda"},
            "node2": {"role": "agent", "ip": "10.0.0.12", "mac": "dc:a6:32:00:00:12", "boot_disk": "/dev/sda",
                      "vars": {"timezone": "Europe/Madrid"}},
        },
    }


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_shipped_inventories_are_valid() -> None:
    real = load_inventory(REPO / "hosts/inventory.yml")
    assert [h.name for h in real.servers] == ["node1"]
    assert [h.name for h in real.agents] == ["node2", "node3", "node4"]
    assert real.gateway is not None and real.gateway.ip == IPv4Address("10.0.0.1")
    lab = load_inventory(REPO / "hosts/lab.yml")
    assert lab.lab is not None and lab.lab.state_dir == REPO / ".lab"
    assert [h.role for h in lab.hosts.values()] == [h.role for h in real.hosts.values()]
    assert all(h.ip in lab.cluster.lan.cidr for h in lab.hosts.values())


def test_vars_are_layered_host_over_group_over_all(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, valid()))
    assert inv.hosts["node2"].vars["timezone"] == "Europe/Madrid"   # host
    assert inv.hosts["node2"].vars["ssh_port"] == 2222              # group
    assert inv.hosts["node1"].vars["timezone"] == "UTC"             # all
    assert inv.hosts["node1"].vars["ssh_port"] == 22                # built-in default
    assert inv.hosts["node2"].ssh.port == 2222 and inv.hosts["node2"].ssh.user == "admin"


def test_settings_type_the_layered_vars(tmp_path: Path) -> None:
    data = valid()
    data["vars"].update({"kubelet_shutdown_grace_period": "1m", "packages": ["jq"], "ssh_key_file": "keys/id"})
    data["groups"]["agent"]["vars"]["kubelet_shutdown_grace_period_critical_pods"] = "15s"
    data["hosts"]["node2"]["vars"]["k3s_node_labels"] = {"disktype": "ssd", "gpu": None}
    inv = load_inventory(write(tmp_path, data))
    node1, node2 = inv.hosts["node1"].settings, inv.hosts["node2"].settings
    assert node2 == HostSettings(
        timezone="Europe/Madrid", locale="C.UTF-8", ssh_port=2222, ssh_key_file=tmp_path / "keys/id",
        ssh_known_hosts=None, lan_interface="eth0", packages=("jq",), ntp_upstream=("pool.ntp.org",), image=None,
        k3s_node_labels={"disktype": "ssd", "gpu": ""}, shutdown=ShutdownGrace(grace=60, critical=15))
    assert node1.shutdown == ShutdownGrace(grace=60, critical=10) and node1.shutdown.logind_delay == 60
    assert node1.k3s_node_labels == {} and node1.timezone == "UTC"
    assert inv.hosts["node2"].ssh.key_file == tmp_path / "keys/id"
    # the cluster-wide layer: `vars` over the defaults, no group or host
    assert inv.settings.timezone == "UTC" and inv.settings.ssh_port == 22 and inv.settings.shutdown.grace == 60


def test_select_by_role_and_limit(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, valid()))
    assert [h.name for h in inv.select(roles=["server", "agent"])] == ["node1", "node2"]
    assert [h.name for h in inv.select(limit=["node2", "gateway"])] == ["gateway", "node2"]
    with pytest.raises(InventoryError, match=r"unknown host.*nodeX"):
        inv.select(limit=["nodeX"])


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]
    return mutate


INVALID = {
    "unknown key": (_set("hosts.node1.colour", "red"), "hosts.node1.colour", "unknown key"),
    "unknown top key": (_set("extras", 1), "extras", "unknown key"),
    "unknown var": (_set("vars.timezon", "UTC"), "vars.timezon", "unknown key"),
    "wrong type": (_set("vars.ssh_port", "22"), "vars.ssh_port", "port number"),
    "wrong type ip": (_set("hosts.node1.ip", 11), "hosts.node1.ip", "IPv4 address"),
    "hosts not a mapping": (_set("hosts", ["node1"]), "hosts", "mapping"),
    "missing key": (_delete("hosts.node1.mac"), "hosts.node1.mac", "missing"),
    "duplicate ip": (_set("hosts.node2.ip", "10.0.0.11"), "hosts.node2.ip", "already the address of node1"),
    "duplicate mac": (_set("hosts.node2.mac", "DC:A6:32:00:00:11"), "hosts.node2.mac", "already the MAC"),
    "ip outside lan": (_set("hosts.node2.ip", "192.168.1.12"), "hosts.node2.ip", "outside the LAN"),
    "no server": (_set("hosts.node1.role", "agent"), "hosts", "no host has role: server"),
    "bad role": (_set("hosts.node1.role", "master"), "hosts.node1.role", "one of gateway, server, agent"),
    "pool overlaps dhcp": (_set("cluster.metallb_pool", ["10.0.0.90", "10.0.0.120"]), "cluster.metallb_pool",
                           "overlaps the DHCP range"),
    "pool holds a host": (_set("cluster.metallb_pool", ["10.0.0.10", "10.0.0.20"]), "hosts.node1.ip",
                          "MetalLB pool"),
    "host in dhcp range": (_set("hosts.node2.ip", "10.0.0.40"), "hosts.node2.ip", "DHCP range"),
    "malformed mac": (_set("hosts.node1.mac", "dc:a6:32:00:00"), "hosts.node1.mac", "expected a MAC address"),
    "malformed key": (_set("cluster.admin_users", [{"name": "admin", "ssh_keys": ["ssh-ed25519 not a key!"]}]),
                      "cluster.admin_users[0].ssh_keys[0]", "OpenSSH public key"),
    "bad hostname": (lambda d: d["hosts"].update({"Node_5": copy.deepcopy(d["hosts"]["node2"]) | {
        "ip": "10.0.0.15", "mac": "dc:a6:32:00:00:15"}}), "hosts.Node_5", "not a valid DNS label"),
    "critical >= grace": (_set("vars.kubelet_shutdown_grace_period_critical_pods", "30s"),
                          "kubelet_shutdown_grace_period_critical_pods", "no time for ordinary pods"),
    "reversed range": (_set("cluster.lan.dhcp_range", ["10.0.0.99", "10.0.0.32"]), "cluster.lan.dhcp_range",
                       "swap them"),
    "automation user not admin": (_set("cluster.automation_user", "ansible"), "cluster.automation_user",
                                  "not one of admin_users"),
    "keys not a list": (_set("cluster.admin_users", [{"name": "admin", "ssh_keys": KEY}]),
                        "cluster.admin_users[0].ssh_keys", "expected a list of keys, got str"),
    "no admin users": (_set("cluster.admin_users", []), "cluster.admin_users", "at least one user"),
    "number for a name": (_set("cluster.name", 7), "cluster.name", "got the number 7; quote it"),
    "lab port": (_set("lab", {"bridge": "br0", "state_dir": ".lab", "apt_proxy_port": 0}), "lab.apt_proxy_port",
                 "expected a port number from 1 to 65535, got 0"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_inventory_is_rejected_in_one_line(tmp_path: Path, case: str) -> None:
    mutate, where, problem = INVALID[case]
    data = copy.deepcopy(valid())
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert where in message and problem in message


def test_duplicate_hostname_is_rejected(tmp_path: Path) -> None:
    text = yaml.safe_dump(valid(), sort_keys=False)
    text += "  node1:\n    role: agent\n    ip: 10.0.0.13\n    mac: dc:a6:32:00:00:13\n    boot_disk: /dev/sda\n"
    with pytest.raises(InventoryError, match=r"'node1' appears twice"):
        load_inventory(write(tmp_path, text))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"line \d+: .*fix the YAML syntax"):
        load_inventory(write(tmp_path, "cluster: [\n  name: x\n"))


def test_missing_file_says_how_to_choose_one(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="--inventory PATH or set PICLUSTER_INVENTORY"):
        load_inventory(tmp_path / "nope.yml")


def test_key_files_are_read_relative_to_the_inventory(tmp_path: Path) -> None:
    data = valid()
    data["cluster"]["admin_users"] = [{"name": "admin", "ssh_key_files": ["keys/admin.pub"]}]
    inv = load_inventory(write(tmp_path, data))
    user = inv.cluster.admin_users[0]
    with pytest.raises(InventoryError, match=r"cannot read SSH public key file .*keys/admin.pub"):
        user.public_keys()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/admin.pub").write_text(KEY + "\n")
    assert user.public_keys() == [KEY]


@hostile("content, expected")
def test_a_hostile_file_is_refused_in_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    assert_refused(load_inventory, tmp_path / "inventory.yml", content, expected, InventoryError)
