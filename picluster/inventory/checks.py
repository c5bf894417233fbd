"""Rules across the keys of a loaded inventory: addresses inside the LAN and unique, pools apart, roles."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address

from picluster.inventory.model import Cluster, Device, Host, Inventory

Fail = Callable[[str, str], Exception]  # (key path, problem) -> the error to raise


def check_consistency(fail: Fail, inv: Inventory) -> None:
    """Rules across keys: uniqueness, addresses inside the LAN, pools that do not overlap."""
    c = inv.cluster
    _check_cluster(fail, c)
    seen_ip: dict[IPv4Address, str] = {}
    seen_mac: dict[str, str] = {}
    for h in inv.hosts.values():
        where = f"hosts.{h.name}"
        _inside(fail, c, h.ip, f"{where}.ip")
        if h.ip in seen_ip:
            raise fail(f"{where}.ip", f"{h.ip} is already the address of {seen_ip[h.ip]}; give each host its own")
        if h.mac in seen_mac:
            raise fail(f"{where}.mac", f"{h.mac} is already the MAC of {seen_mac[h.mac]}; each NIC has its own")
        seen_ip[h.ip], seen_mac[h.mac] = h.name, h.name
        _check_host(fail, c, h)
    _check_roles(fail, inv)
    _check_names(fail, inv)
    for d in inv.devices.values():
        _check_device(fail, c, d, seen_ip, seen_mac)


def _check_names(fail: Fail, inv: Inventory) -> None:
    """One DNS name per record: hosts, devices and services never share a name."""
    owner = {name: "host" for name in inv.hosts}
    for name in inv.devices:
        if name in owner:
            raise fail(f"devices.{name}", f"{name} is already a host's name; give the device its own")
        owner[name] = "device"
    for name in inv.cluster.services:
        if name in owner:
            raise fail(f"cluster.services.{name}", f"{name}.{inv.cluster.domain} is already the record of a "
                       f"{owner[name]}; rename the service or the {owner[name]}")


def _check_device(fail: Fail, c: Cluster, d: Device, seen_ip: dict[IPv4Address, str],
                  seen_mac: dict[str, str]) -> None:
    """A device: inside the LAN, outside the pools, its address and MAC its own (the controller's may be its)."""
    where = f"devices.{d.name}"
    _inside(fail, c, d.ip, f"{where}.ip")
    pool, dhcp = c.metallb_pool, c.lan.dhcp_range
    if _in_range(d.ip, pool) or _in_range(d.ip, dhcp):
        which = "MetalLB pool" if _in_range(d.ip, pool) else "DHCP range"
        raise fail(f"{where}.ip", f"{d.ip} lies in the {which}; give the device an address outside it")
    if d.ip in seen_ip:
        raise fail(f"{where}.ip", f"{d.ip} is already the address of {seen_ip[d.ip]}; give each device its own")
    if d.mac is not None and d.mac in seen_mac:
        raise fail(f"{where}.mac", f"{d.mac} is already the MAC of {seen_mac[d.mac]}; each NIC has its own")
    seen_ip[d.ip] = d.name
    if d.mac is not None:
        seen_mac[d.mac] = d.name


def _inside(fail: Fail, c: Cluster, ip: IPv4Address, where: str) -> None:
    lan = c.lan.cidr
    if ip not in lan or ip in (lan.network_address, lan.broadcast_address):
        raise fail(where, f"{ip} is outside the LAN {lan}; use a host address of {lan}")


def _in_range(ip: IPv4Address, pair: tuple[IPv4Address, IPv4Address]) -> bool:
    return pair[0] <= ip <= pair[1]


def _check_cluster(fail: Fail, c: Cluster) -> None:
    _inside(fail, c, c.lan.gateway, "cluster.lan.gateway")
    _inside(fail, c, c.controller, "cluster.controller")
    for i, ip in enumerate(c.lan.dhcp_range):
        _inside(fail, c, ip, f"cluster.lan.dhcp_range[{i}]")
    for i, ip in enumerate(c.metallb_pool):
        _inside(fail, c, ip, f"cluster.metallb_pool[{i}]")
    pool, dhcp = c.metallb_pool, c.lan.dhcp_range
    if pool[0] <= dhcp[1] and dhcp[0] <= pool[1]:
        raise fail("cluster.metallb_pool",
                   f"{pool[0]}-{pool[1]} overlaps the DHCP range {dhcp[0]}-{dhcp[1]}; make them disjoint")


def _check_host(fail: Fail, c: Cluster, h: Host) -> None:
    where = f"hosts.{h.name}"
    pool, dhcp = c.metallb_pool, c.lan.dhcp_range
    if _in_range(h.ip, pool):
        raise fail(f"{where}.ip", f"{h.ip} lies in the MetalLB pool {pool[0]}-{pool[1]}; "
                   "move the host or shrink the pool")
    if _in_range(h.ip, dhcp):
        raise fail(f"{where}.ip", f"{h.ip} lies in the DHCP range {dhcp[0]}-{dhcp[1]}; "
                   "give the host an address outside it")
    if h.ip == c.controller:
        raise fail(f"{where}.ip", f"{h.ip} is the controller's address (cluster.controller)")
    dp = h.data_partition
    if dp is not None and not re.fullmatch(re.escape(h.boot_disk) + r"p?[0-9]+", dp.device):
        raise fail(f"{where}.data_partition.device", f"{dp.device} is not a partition of boot_disk {h.boot_disk}, "
                   "where the data partition is made; name a partition of that disk")
    grace, critical = h.settings.shutdown.grace, h.settings.shutdown.critical
    if critical >= grace:
        raise fail(f"{where}.vars.kubelet_shutdown_grace_period_critical_pods",
                   f"{critical}s leaves no time for ordinary pods within the {grace}s grace period; "
                   "make it smaller than kubelet_shutdown_grace_period")


def _check_roles(fail: Fail, inv: Inventory) -> None:
    if not any(h.role == "server" for h in inv.hosts.values()):
        raise fail("hosts", "no host has role: server; K3S needs one server")
    gateways = [h.name for h in inv.hosts.values() if h.role == "gateway"]
    if len(gateways) > 1:
        raise fail(f"hosts.{gateways[1]}.role", f"only one gateway is supported; {gateways[0]} is one already")
    gw = inv.gateway
    if gw is not None and gw.ip != inv.cluster.lan.gateway:
        raise fail(f"hosts.{gw.name}.ip", f"the gateway host is at {gw.ip} but cluster.lan.gateway is "
                   f"{inv.cluster.lan.gateway}; make them the same")
