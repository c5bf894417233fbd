"""Read an inventory file and build the typed model, checking every key as it goes."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from picluster.inventory import grammar as g
from picluster.inventory import model
from picluster.inventory.checks import check_consistency
from picluster.inventory.model import ROLES, InventoryError
from picluster.inventory.settings import VAR_SCHEMA, layered, port, settings_of
from picluster.yamlfile import Checker, read_yaml

DEFAULT_INVENTORY = "hosts/inventory.yml"
INVENTORY_ENV = "PICLUSTER_INVENTORY"



def default_inventory_path() -> Path:
    """The inventory to use when none is given: $PICLUSTER_INVENTORY, else hosts/inventory.yml."""
    return Path(os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


class _Reader(Checker):
    """Walks the YAML tree; every error names the file and the key path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, InventoryError)
        self.base = path.parent

    def ip(self, value: Any, where: str) -> IPv4Address:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return IPv4Address(value)
        except (ipaddress.AddressValueError, ValueError):
            raise self.fail(where, f"expected an IPv4 address such as 10.0.0.11, got {value!r}") from None

    def ip_pair(self, value: Any, where: str) -> tuple[IPv4Address, IPv4Address]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(where, f"expected [first, last] addresses, got {value!r}")
        first, last = self.ip(value[0], f"{where}[0]"), self.ip(value[1], f"{where}[1]")
        if first > last:
            raise self.fail(where, f"first address {first} is after last {last}; swap them")
        return first, last

    def local_path(self, value: Any, where: str) -> Path:
        """A controller path (relative to the inventory's folder), as it will be used: no control character."""
        text = self.converted(value, where, g.local_path)
        p = Path(text).expanduser()
        p = p if p.is_absolute() else (self.base / p).resolve()
        return Path(self.converted(str(p), where, g.local_path))

    def word(self, value: Any, where: str, pattern: Any, what: str) -> str:
        """`value` as a string that `pattern` matches whole (no stripping: what is written is what is used)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise self.fail(where, f"expected a string, got the number {value!r}; quote it: \"{value}\"")
        if not g.matches(pattern, value):
            raise self.fail(where, f"expected {what}, got {g.shown(value)}")
        return str(value)

    def converted(self, value: Any, where: str, grammar: Any) -> Any:
        """`value` through a grammar of `settings` (which raises ValueError saying what it expects)."""
        try:
            return grammar(value)
        except ValueError as err:
            raise self.fail(where, f"expected {err}, got {g.shown(value)}") from None


def load_inventory(path: str | os.PathLike[str]) -> model.Inventory:
    """Read, validate and type an inventory file; raise InventoryError with one line on any problem."""
    path = Path(path)
    if g.CONTROL.search(str(path)):
        raise InventoryError(f"{g.shown(str(path))}: an inventory path with a control character would reach the "
                             "files made from it; rename the file")
    data = read_yaml(path, "inventory", InventoryError, f"pass --inventory PATH or set {INVENTORY_ENV}")
    r = _Reader(path)
    top = r.mapping(data, "", required={"cluster", "hosts"}, optional={"vars", "groups", "lab", "devices"})
    cluster = _cluster(r, top["cluster"])
    all_vars = _vars(r, top.get("vars"), "vars")
    groups = r.mapping(top.get("groups"), "groups", optional=ROLES)
    group_vars = {
        role: _vars(r, r.mapping(g, f"groups.{role}", optional={"vars"}).get("vars"), f"groups.{role}.vars")
        for role, g in groups.items()
    }
    hosts_data = top["hosts"]
    if not isinstance(hosts_data, dict) or not hosts_data:
        raise r.fail("hosts", "expected a mapping of host name to host settings, with at least one host")
    hosts = {str(name): _host(r, str(name), h, cluster, (all_vars, group_vars)) for name, h in hosts_data.items()}
    lab = _lab(r, top["lab"]) if "lab" in top else None
    devices = {str(name): _device(r, str(name), d) for name, d in r.table(top.get("devices") or {}, "devices").items()}
    inv = model.Inventory(path=r.path, cluster=cluster, hosts=hosts, lab=lab, vars=all_vars,
                          settings=settings_of(all_vars), devices=devices)
    check_consistency(r.fail, inv)
    return inv


def _cluster(r: _Reader, data: Any) -> model.Cluster:
    c = r.mapping(data, "cluster",
                  required={"name", "domain", "lan", "metallb_pool", "controller", "automation_user", "admin_users"},
                  optional={"services", "dns_upstream"})
    users = r.items(c["admin_users"], "cluster.admin_users", lambda u, where: _admin_user(r, u, where), "users")
    if not users:
        raise r.fail("cluster.admin_users", "expected a list with at least one user")
    automation_user = r.word(c["automation_user"], "cluster.automation_user", g.USER, g.USER_WHAT)
    if automation_user not in {u.name for u in users}:
        raise r.fail("cluster.automation_user",
                     f"{automation_user!r} is not one of admin_users; add it there so cloud-init creates it")
    return model.Cluster(
        name=r.word(c["name"], "cluster.name", g.LABEL, g.DNS_LABEL),
        domain=_domain(r, c["domain"], "cluster.domain"),
        lan=_lan(r, c["lan"], "cluster.lan"),
        metallb_pool=r.ip_pair(c["metallb_pool"], "cluster.metallb_pool"),
        controller=r.ip(c["controller"], "cluster.controller"),
        automation_user=automation_user,
        admin_users=users,
        services=_services(r, c.get("services"), "cluster.services"),
        dns_upstream=r.items(c.get("dns_upstream"), "cluster.dns_upstream",
                             lambda v, at: _dns_server(r, v, at), "addresses"),
    )


def _domain(r: _Reader, value: Any, where: str) -> str:
    if not isinstance(value, str) or not g.domain(value):
        raise r.fail(where, f"expected a DNS name such as picluster.example.com (labels of a-z, 0-9 and -, "
                     f"joined by dots), got {g.shown(value)}")
    return value


def _dns_server(r: _Reader, value: Any, where: str) -> IPv4Address:
    """An upstream DNS server: dnsmasq's `server=` takes an address, not a name."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return IPv4Address(value)
    except ValueError:
        raise r.fail(where, f"expected the IPv4 address of a DNS server such as 1.1.1.1 "
                     f"(dnsmasq forwards to addresses, not names), got {g.shown(value)}") from None


def _lan(r: _Reader, data: Any, where: str) -> model.Lan:
    lan = r.mapping(data, where, required={"cidr", "gateway", "dhcp_range"}, optional={"dhcp_lease"})
    try:
        cidr = IPv4Network(str(lan["cidr"]))
    except ValueError:
        raise r.fail(f"{where}.cidr", f"expected a network such as 10.0.0.0/24, got {lan['cidr']!r}") from None
    return model.Lan(
        cidr=cidr,
        gateway=r.ip(lan["gateway"], f"{where}.gateway"),
        dhcp_range=r.ip_pair(lan["dhcp_range"], f"{where}.dhcp_range"),
        dhcp_lease=r.word(lan.get("dhcp_lease", "12h"), f"{where}.dhcp_lease", g.LEASE, g.LEASE_WHAT),
    )


def _services(r: _Reader, data: Any, where: str) -> dict[str, IPv4Address]:
    services = {}
    for name, addr in r.table(data or {}, where).items():
        r.word(name, f"{where}.{name}", g.LABEL, g.DNS_LABEL)
        services[name] = r.ip(addr, f"{where}.{name}")
    return services


def _admin_user(r: _Reader, data: Any, where: str) -> model.AdminUser:
    u = r.mapping(data, where, required={"name"}, optional={"groups", "ssh_keys", "ssh_key_files"})
    keys = r.items(u.get("ssh_keys"), f"{where}.ssh_keys", lambda k, at: _public_key(r, k, at), "keys")
    files = r.items(u.get("ssh_key_files"), f"{where}.ssh_key_files", r.local_path, "paths")
    if not keys and not files:
        raise r.fail(f"{where}.ssh_keys", "give at least one key (ssh_keys or ssh_key_files), "
                     "or the user could never log in")
    return model.AdminUser(
        name=r.word(u["name"], f"{where}.name", g.USER, g.USER_WHAT),
        groups=r.items(u.get("groups"), f"{where}.groups",
                       lambda grp, at: r.word(grp, at, g.USER, g.GROUP_WHAT), "group names"),
        ssh_keys=keys,
        ssh_key_files=files,
    )


def _public_key(r: _Reader, value: Any, where: str) -> str:
    """An OpenSSH public key line whose base64 blob really encodes a key of the named type."""
    what = "an OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
    if not g.ssh_public_key_line(value):
        raise r.fail(where, f"{g.shown(value)} is not {what}")
    key = str(value)
    kind, blob = key.split(" ")[:2]
    try:
        raw = base64.b64decode(blob, validate=True)
        length = int.from_bytes(raw[:4], "big")
        ok = raw[4:4 + length].decode("ascii") == kind
    except (binascii.Error, UnicodeDecodeError):
        ok = False
    if not ok:
        raise r.fail(where, f"{key[:40]!r}... is not {what}")
    return key


def _vars(r: _Reader, data: Any, where: str) -> dict[str, Any]:
    """One layer of vars, each checked by its grammar (paths resolved relative to the inventory)."""
    out: dict[str, Any] = {}
    for key, value in r.mapping(data, where, optional=VAR_SCHEMA).items():
        grammar, _default = VAR_SCHEMA[key]
        if grammar is None:
            out[key] = r.local_path(value, f"{where}.{key}")
        else:
            out[key] = r.converted(value, f"{where}.{key}", grammar)
    return out


def _host(r: _Reader, name: str, data: Any, cluster: model.Cluster,
          shared: tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]) -> model.Host:
    """One host; `shared` is the vars of all hosts and those of each group, which its own vars override."""
    where = f"hosts.{name}"
    if not g.LABEL.fullmatch(name):
        raise r.fail(where, f"host name {g.shown(name)} is not a valid {g.DNS_LABEL[2:]}")
    h = r.mapping(data, where, required={"role", "ip", "mac", "boot_disk"},
                  optional={"data_partition", "wan", "vars"})
    role = h["role"]
    if role not in ROLES:
        raise r.fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    mac = _mac(r, h["mac"], f"{where}.mac")
    wan = _wan(r, h["wan"], f"{where}.wan") if h.get("wan") is not None else None
    if wan is not None and role != "gateway":
        raise r.fail(f"{where}.wan", "only the gateway has a WAN side; remove it or make the host the gateway")
    all_vars, group_vars = shared
    layers = (all_vars, group_vars.get(role, {}), _vars(r, h.get("vars"), f"{where}.vars"))
    return model.Host(
        name=name, role=role, ip=r.ip(h["ip"], f"{where}.ip"), mac=mac,
        boot_disk=r.word(h["boot_disk"], f"{where}.boot_disk", g.DISK, g.DISK_WHAT),
        data_partition=_data_partition(r, h.get("data_partition"), f"{where}.data_partition"),
        wan=wan, vars=layered(*layers), automation_user=cluster.automation_user, settings=settings_of(*layers),
    )


def _device(r: _Reader, name: str, data: Any) -> model.Device:
    """A LAN device that is not a node: its name and address, and its MAC when it gets a DHCP reservation."""
    where = f"devices.{name}"
    if not g.LABEL.fullmatch(name):
        raise r.fail(where, f"device name {g.shown(name)} is not a valid {g.DNS_LABEL[2:]}")
    d = r.mapping(data, where, required={"ip"}, optional={"mac"})
    mac = _mac(r, d["mac"], f"{where}.mac") if d.get("mac") is not None else None
    return model.Device(name=name, ip=r.ip(d["ip"], f"{where}.ip"), mac=mac)


def _data_partition(r: _Reader, data: Any, where: str) -> model.DataPartition | None:
    if data is None:
        return None
    dp = r.mapping(data, where, required={"device", "start"})
    start = str(dp["start"]) if isinstance(dp["start"], int) and not isinstance(dp["start"], bool) else dp["start"]
    if not g.matches(g.SIZE, start):
        raise r.fail(f"{where}.start", f"expected a size such as 30G, got {g.shown(dp['start'])}")
    return model.DataPartition(device=r.word(dp["device"], f"{where}.device", g.PARTITION, g.PARTITION_WHAT),
                               start=start)


def _mac(r: _Reader, value: Any, where: str) -> str:
    """A MAC address, in lower case (as dnsmasq and netplan compare them)."""
    if not isinstance(value, str) or not g.MAC.fullmatch(value.lower()):
        raise r.fail(where, f"expected a MAC address like dc:a6:32:01:02:03, got {g.shown(value)}")
    return value.lower()


def _wan(r: _Reader, data: Any, where: str) -> model.Wan:
    w = r.mapping(data, where, required={"interface"}, optional={"address", "gateway", "wifi"})
    address = None
    if w.get("address") is not None:
        try:
            address = IPv4Interface(str(w["address"]))
        except ValueError:
            raise r.fail(f"{where}.address",
                         f"expected an address with prefix such as 192.168.1.11/24, got {w['address']!r}") from None
    wifi = None
    if w.get("wifi") is not None:
        wf = r.mapping(w["wifi"], f"{where}.wifi", required={"ssid", "password_secret"})
        ssid = r.word(wf["ssid"], f"{where}.wifi.ssid", g.SSID, g.SSID_WHAT)
        if len(ssid.encode("utf-8")) > 32:
            raise r.fail(f"{where}.wifi.ssid", f"{g.shown(ssid)} is longer than an SSID's 32 bytes")
        wifi = model.Wifi(ssid=ssid, password_secret=r.word(wf["password_secret"], f"{where}.wifi.password_secret",
                                                            g.SECRET, g.SECRET_WHAT))
    return model.Wan(
        interface=r.word(w["interface"], f"{where}.interface", g.IFNAME, g.IFNAME_WHAT),
        address=address,
        gateway=r.ip(w["gateway"], f"{where}.gateway") if w.get("gateway") is not None else None,
        wifi=wifi,
    )


def _lab(r: _Reader, data: Any) -> model.LabSettings:
    lab = r.mapping(data, "lab", required={"bridge", "state_dir"}, optional={"apt_proxy_port"})
    return model.LabSettings(
        bridge=r.word(lab["bridge"], "lab.bridge", g.BRIDGE, "an interface name (a-z, 0-9, at most 15)"),
        apt_proxy_port=r.converted(lab.get("apt_proxy_port", 3142), "lab.apt_proxy_port", port),
        state_dir=r.local_path(lab["state_dir"], "lab.state_dir"),
    )
