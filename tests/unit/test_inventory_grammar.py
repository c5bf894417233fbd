"""Every inventory value to its exact grammar: hostile values are refused at load, in one line, with the key path.

Each field that reaches a shell, cloud-init, a config file or ssh_config is tried with a trailing newline, a
CR, a second line, a space, `;`, `$(`, a leading `-` and the field's own near misses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stage_support import reference_data, write_inventory

from picluster.inventory import Device, InventoryError, load_inventory
from picluster.inventory.grammar import known_zones

REPO = Path(__file__).resolve().parents[2]
INJECTIONS = ["\n", "\r", "\nserver=6.6.6.6", " x", ";reboot", "$(reboot)"]


def _put(path: str) -> Callable[[dict[str, Any], Any], None]:
    """A setter of the value at `path` (dots; `[i]` for list items) in inventory data."""
    def put(data: dict[str, Any], value: Any) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            name, _, index = p.partition("[")
            node = node.setdefault(name, {})
            if index:
                node = node[int(index[:-1])]
        name, _, index = last.partition("[")
        if index:
            node[name][int(index[:-1])] = value
        else:
            node[name] = value
    return put


# key path -> (a valid value, values that must be refused beyond the injections appended to the valid one)
FIELDS: dict[str, tuple[Any, list[Any]]] = {
    "cluster.name": ("picluster", ["-x", "Pi", "a_b", "x" * 64]),
    "cluster.domain": ("picluster.example.com", ["-a.com", "a..b", "a.com.", "a b.com", "x" * 254]),
    "cluster.automation_user": ("picluster", ["-rf", "Root", "1abc", "a" * 33]),
    "cluster.admin_users[0].name": ("picluster", ["-rf", "a:b", "a/b"]),
    "cluster.admin_users[1].groups[0]": ("adm", ["-g", "a,b", "sudo wheel"]),
    "cluster.lan.dhcp_lease": ("12h", ["12x", "-1", "0", "h", "12 h"]),
    "cluster.dns_upstream[0]": ("80.58.61.250", ["dns.google", "80.58.61", "-1.1.1.1", "1.1.1.1#53"]),
    "cluster.services.s3": ("10.0.0.11", ["10.0.0.11/24", "s3.example.com"]),
    "vars.timezone": ("Europe/Madrid", ["Europe/Nowhere", "../../etc/passwd", "-UTC", "Europe/Madrid/"]),
    "vars.locale": ("es_ES.UTF-8", ["-C", "es_ES.UTF-8 x", "en_US.UTF-8\\"]),
    "vars.packages[0]": ("libraspberrypi-bin", ["-y", "--allow-downgrades", "a", "Foo", "a b", "a=1.0"]),
    "vars.ntp_upstream[0]": ("ntp.ubuntu.com", ["-q", "ntp..org", "a b", "pool.ntp.org iburst", "fe80::1%eth0"]),
    "vars.image": ("ubuntu-20.04", ["-x", "../x", "a/b"]),
    "vars.ssh_port": (22, ["22\n", 0, 70000, True]),
    "groups.gateway.vars.lan_interface": ("eth0", ["-eth0", ".", "..", "a" * 16, "eth0:1", "br/0", 'e"th']),
    "hosts.node1.mac": ("dc:a6:32:00:00:11", ["dc:a6:32:00:00", "dc-a6-32-00-00-11", "dc:a6:32:00:00:111"]),
    "hosts.node1.boot_disk": ("/dev/sda", ["/dev/sda /dev/sdb", "/dev/sda3", "/dev/../sda", "sda", "-/dev/sda",
                                           "/dev/sda;reboot", "/dev/disk/by-id/x"]),
    "hosts.node1.data_partition.device": ("/dev/sda3", ["/dev/sda", "/dev/sda3 /dev/sdb3", "/dev/sdb3", "/dev/sda0"]),
    "hosts.node1.data_partition.start": ("30G", ["30GB", "-30G", "30 G", "30G:0"]),
    "hosts.gateway.wan.interface": ("wlan0", ["-wlan0", "wlan0 eth0", "w" * 16]),
    "hosts.gateway.wan.wifi.ssid": ("homelab", ["", " homelab", "home\"lab", "back\\slash", "x" * 33]),
    "hosts.gateway.wan.wifi.password_secret": ("wifi_password", ["../x", "-x", "a b", "a/b"]),
    "vars.k3s_node_labels": ({"disktype": "ssd"}, [{"disk type": "ssd"}, {"a": "ssd\n"}, {"a": "-ssd"},
                                                   {"a\n": "ssd"}]),
    "vars.ssh_key_file": ("keys/id", ["keys/id\nProxyCommand x", "keys/${HOME}", " keys/id"]),
    "vars.ssh_known_hosts": ("keys/known", ["keys/known\r", "keys/\x00"]),
    "devices.switch.mac": ("94:a6:7e:7c:c7:69", ["94:a6:7e:7c:c7", "94:a6:7e:7c:c7:69 x"]),
}


# free text, which only ever reaches a file quoted or YAML-dumped (netplan, ssh_config): only a second line
# is refused there, a space, `;` or `$(` is part of the name
FREE_TEXT = {"hosts.gateway.wan.wifi.ssid", "vars.ssh_key_file", "vars.ssh_known_hosts"}


def _cases() -> list[Any]:
    out = []
    for where, (good, bad) in FIELDS.items():
        extras = [e for e in INJECTIONS if e[0] in "\n\r"] if where in FREE_TEXT else INJECTIONS
        tails = [good + extra for extra in extras] if isinstance(good, str) else []
        for value in [*tails, *bad]:
            out.append(pytest.param(where, value, id=f"{where}={value!r}"[:90]))
    return out


def _data() -> dict[str, Any]:
    data = copy.deepcopy(reference_data())
    data["cluster"]["admin_users"][1]["groups"] = ["adm"]
    return data


@pytest.mark.parametrize("where", list(FIELDS))
def test_the_valid_value_of_each_field_loads(tmp_path: Path, where: str) -> None:
    data = _data()
    _put(where)(data, FIELDS[where][0])
    write_inventory(tmp_path, data)


@pytest.mark.parametrize(("where", "value"), _cases())
def test_a_hostile_value_is_refused_in_one_line_naming_the_key(tmp_path: Path, where: str, value: Any) -> None:
    data = _data()
    _put(where)(data, value)
    with pytest.raises(InventoryError) as err:
        write_inventory(tmp_path, data)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message and len(message) < 400
    assert message.startswith(f"{tmp_path / 'inventory.yml'}: ")
    assert where.split("[")[0] in message, message


def test_a_time_zone_is_checked_against_the_tz_database() -> None:
    zones = known_zones()
    assert "Europe/Madrid" in zones and "Etc/UTC" in zones, "this controller has no tz database"


@pytest.mark.parametrize("name", ["inventory.yml\n# injected", "inv\r.yml"])
def test_an_inventory_path_with_a_control_character_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text((REPO / "hosts" / "lab.yml").read_text())
    with pytest.raises(InventoryError, match=r"control character .* rename the file"):
        load_inventory(path)


# --- devices that are not nodes --------------------------------------------------------------------------


def test_the_reference_devices_load_as_the_reference_has_them() -> None:
    inv = load_inventory(REPO / "hosts" / "inventory.yml")
    assert dict(inv.devices) == {
        "switch": Device("switch", inv.cluster.lan.gateway + 1, "94:a6:7e:7c:c7:69"),
        "pimaster": Device("pimaster", inv.cluster.controller, None)}


DEVICE_RULES = {
    "outside the lan": ({"ip": "192.168.1.2"}, "devices.x.ip", "outside the LAN"),
    "in the dhcp range": ({"ip": "10.0.0.40"}, "devices.x.ip", "DHCP range"),
    "in the metallb pool": ({"ip": "10.0.0.150"}, "devices.x.ip", "MetalLB pool"),
    "a host's address": ({"ip": "10.0.0.12"}, "devices.x.ip", "already the address of node2"),
    "another device's address": ({"ip": "10.0.0.2"}, "devices.x.ip", "already the address of switch"),
    "a host's mac": ({"ip": "10.0.0.3", "mac": "DC:A6:32:00:00:12"}, "devices.x.mac", "already the MAC of node2"),
    "another device's mac": ({"ip": "10.0.0.3", "mac": "94:a6:7e:7c:c7:69"}, "devices.x.mac",
                             "already the MAC of switch"),
    "no ip": ({"mac": "02:00:00:00:00:01"}, "devices.x.ip", "missing"),
    "unknown key": ({"ip": "10.0.0.3", "role": "agent"}, "devices.x.role", "unknown key"),
    "bad mac": ({"ip": "10.0.0.3", "mac": "02:00:00:00:00:01\n"}, "devices.x.mac", "MAC address"),
}


@pytest.mark.parametrize("case", list(DEVICE_RULES))
def test_a_device_is_validated_like_a_host(tmp_path: Path, case: str) -> None:
    device, where, problem = DEVICE_RULES[case]
    data = _data()
    data["devices"] = {"switch": {"ip": "10.0.0.2", "mac": "94:a6:7e:7c:c7:69"}, "x": device}
    with pytest.raises(InventoryError) as err:
        write_inventory(tmp_path, data)
    assert where in str(err.value) and problem in str(err.value), str(err.value)


@pytest.mark.parametrize(("name", "problem"), [("node1", "already a host's name"), ("Switch", "not a valid DNS label"),
                                               ("sw\n", "not a valid DNS label")])
def test_a_device_name_is_a_label_of_its_own(tmp_path: Path, name: str, problem: str) -> None:
    data = _data()
    data["devices"] = {name: {"ip": "10.0.0.3"}}
    with pytest.raises(InventoryError, match=problem):
        write_inventory(tmp_path, data)


def test_a_service_may_not_take_a_host_or_device_name(tmp_path: Path) -> None:
    data = _data()
    data["cluster"]["services"]["switch"] = "10.0.0.100"
    with pytest.raises(InventoryError, match=r"cluster\.services\.switch: switch\..* is already the record of a"):
        write_inventory(tmp_path, data)
