"""Gate after the gateway stage: firewall, forwarding, DHCP/DNS, resolver, NTP server, fluent-bit.

The DNS checks query dnsmasq from the controller (which sits on the LAN), one name per check: every
host and every service of the inventory's registry.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

import pytest

from picluster.inventory import Host, Inventory, load_inventory
from picluster.stages import gateway as gateway_stage


def _names() -> list[tuple[str, str]]:
    import os

    path = os.environ.get("PICLUSTER_INVENTORY")
    if not path:
        return []
    inv = load_inventory(path)
    names = [(f"{h.name}.{inv.cluster.domain}", str(h.ip)) for h in inv.hosts.values()]
    names += [(f"{s}.{inv.cluster.domain}", str(ip)) for s, ip in inv.cluster.services.items()]
    return names


def dns_a(server: str, name: str, timeout: float = 3.0) -> list[str]:
    """Ask `server` for the A records of `name` over UDP; return the addresses."""
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        data = s.recv(4096)
    rid, _flags, _qd, answers = struct.unpack(">HHHH", data[:8])
    assert rid == qid
    pos = 12 + len(question)
    found = []
    for _ in range(answers):
        if data[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += length
    return found


@pytest.mark.parametrize(("name", "address"), _names(), ids=[n for n, _ in _names()])
def test_dnsmasq_answers_for(inventory: Inventory, name: str, address: str) -> None:
    assert dns_a(str(inventory.cluster.lan.gateway), name) == [address]


def test_ip_forwarding(host: Any) -> None:
    now = host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip()
    with host.sudo():
        writable = host.run("test -w /proc/sys/net/ipv4/ip_forward").rc == 0
    virt = host.run("systemd-detect-virt --container")
    if now != "1" and not writable and virt.rc == 0:
        pytest.skip(f"/proc/sys is read-only in this container ({virt.stdout.strip()}): the host's kernel owns "
                    "net.ipv4.ip_forward here (persisted in /etc/sysctl.d for a real gateway)")
    assert now == "1"


def test_nftables_file(host: Any, node: Host, inventory: Inventory) -> None:
    assert host.file("/etc/nftables.conf").content_string == gateway_stage.nftables_conf(inventory, node)


def test_nftables_loaded_at_boot(host: Any) -> None:
    assert host.service("nftables").is_enabled


def test_firewall_input_policy_is_drop(host: Any) -> None:
    with host.sudo():
        ruleset = host.check_output("nft list chain inet filter input")
    assert "policy drop;" in ruleset and "tcp dport { 22, 80, 443, 3260, 9100 }" in ruleset


def test_firewall_masquerades_the_lan(host: Any, node: Host, inventory: Inventory) -> None:
    if node.wan is None:
        pytest.skip(f"{node.name} has no WAN interface in the inventory: nothing to masquerade")
    with host.sudo():
        nat = host.check_output("nft list table ip nat")
    assert f'ip saddr {inventory.cluster.lan.cidr} oifname "{node.wan.interface}" masquerade' in nat


def test_dnsmasq_config(host: Any, node: Host, inventory: Inventory) -> None:
    assert host.file(gateway_stage.DNSMASQ_CONF).content_string == gateway_stage.dnsmasq_conf(inventory, node)


def test_dnsmasq_running(host: Any) -> None:
    service = host.service("dnsmasq")
    assert service.is_running and service.is_enabled


@pytest.mark.parametrize("port", ["udp://{ip}:53", "tcp://{ip}:53"])
def test_dnsmasq_listens(host: Any, node: Host, port: str) -> None:
    assert host.socket(port.format(ip=node.ip)).is_listening


def test_dnsmasq_serves_dhcp(host: Any, node: Host) -> None:
    with host.sudo():
        listening = host.check_output("ss -Hulnp 'sport = :67'")
    assert "dnsmasq" in listening and node.vars["lan_interface"] in listening


def test_resolved_points_at_dnsmasq(host: Any, node: Host) -> None:
    assert host.service("systemd-resolved").is_running
    assert str(node.ip) in host.check_output("resolvectl dns")


def test_chrony_serves_the_lan(host: Any, inventory: Inventory) -> None:
    assert f"allow {inventory.cluster.lan.cidr}" in host.file("/etc/chrony/chrony.conf").content_string
    assert host.socket("udp://0.0.0.0:123").is_listening


def _fluentbit(host: Any) -> None:
    if not host.package("fluent-bit").is_installed:
        pytest.skip("fluent-bit is not installed: its vendor repository (packages.fluentbit.io) was not "
                    "reachable from the gateway, so the stage skipped it")


def test_fluentbit_running(host: Any) -> None:
    _fluentbit(host)
    service = host.service("fluent-bit")
    assert service.is_running and service.is_enabled


def test_fluentbit_exports_node_metrics(host: Any) -> None:
    _fluentbit(host)
    assert host.socket("tcp://0.0.0.0:9100").is_listening


def test_iptables_is_removed(host: Any) -> None:
    for package in gateway_stage.IPTABLES_PACKAGES:
        assert not host.package(package).is_installed, f"{package}: the firewall is nftables alone"
