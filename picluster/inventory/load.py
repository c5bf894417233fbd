"""Read an inventory file and build the typed model, checking every key as it goes."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from picluster.inventory import model
from picluster.inventory.checks import check_consistency
from picluster.inventory.model import ROLES, InventoryError
from picluster.inventory.settings import VAR_SCHEMA, layered, port, settings_of
from picluster.yamlfile import Checker, read_yaml

DEFAULT_INVENTORY = "hosts/inventory.yml"
INVENTORY_ENV = "PICLUSTER_INVENTORY"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DNS_LABEL = "a DNS label (a-z, 0-9, -)"
_USER = "a user name (a-z, 0-9, -)"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
                  r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
_SIZE = re.compile(r"^\d+[KMGT]?$")
_BRIDGE = re.compile(r"^[a-z][a-z0-9]{0,14}$")


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
        p = Path(self.text(value, where, what="a file path")).expanduser()
        return p if p.is_absolute() else (self.base / p).resolve()

    def converted(self, value: Any, where: str, grammar: Any) -> Any:
        """`value` through a grammar of `settings` (which raises ValueError saying what it expects)."""
        try:
            return grammar(value)
        except ValueError as err:
            raise self.fail(where, f"expected {err}, got {value!r}") from None


def load_inventory(path: str | os.PathLike[str]) -> model.Inventory:
    """Read, validate and type an inventory file; raise InventoryError with one line on any problem."""
    path = Path(path)
    data = read_yaml(path, "inventory", InventoryError, f"pass --inventory PATH or set {INVENTORY_ENV}")
    r = _Reader(path)
    top = r.mapping(data, "", required={"cluster", "hosts"}, optional={"vars", "groups", "lab"})
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
    inv = model.Inventory(path=r.path, cluster=cluster, hosts=hosts, lab=lab, vars=all_vars,
                          settings=settings_of(all_vars))
    check_consistency(r.fail, inv)
    return inv


def _cluster(r: _Reader, data: Any) -> model.Cluster:
    c = r.mapping(data, "cluster",
                  required={"name", "domain", "lan", "metallb_pool", "controller", "automation_user", "admin_users"},
                  optional={"services", "dns_upstream"})
    users = r.items(c["admin_users"], "cluster.admin_users", lambda u, where: _admin_user(r, u, where), "users")
    if not users:
        raise r.fail("cluster.admin_users", "expected a list with at least one user")
    automation_user = r.text(c["automation_user"], "cluster.automation_user", _LABEL, _USER)
    if automation_user not in {u.name for u in users}:
        raise r.fail("cluster.automation_user",
                     f"{automation_user!r} is not one of admin_users; add it there so cloud-init creates it")
    return model.Cluster(
        name=r.text(c["name"], "cluster.name", _LABEL, _DNS_LABEL),
        domain=_domain(r, c["domain"], "cluster.domain"),
        lan=_lan(r, c["lan"], "cluster.lan"),
        metallb_pool=r.ip_pair(c["metallb_pool"], "cluster.metallb_pool"),
        controller=r.ip(c["controller"], "cluster.controller"),
        automation_user=automation_user,
        admin_users=users,
        services=_services(r, c.get("services"), "cluster.services"),
        dns_upstream=r.items(c.get("dns_upstream"), "cluster.dns_upstream", r.ip, "addresses"),
    )


def _domain(r: _Reader, value: Any, where: str) -> str:
    domain = r.text(value, where)
    if not all(_LABEL.match(label) for label in domain.split(".")):
        raise r.fail(where, f"{domain!r} is not a DNS name (labels of a-z, 0-9 and -)")
    return domain


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
        dhcp_lease=r.text(lan.get("dhcp_lease", "12h"), f"{where}.dhcp_lease"),
    )


def _services(r: _Reader, data: Any, where: str) -> dict[str, IPv4Address]:
    services = {}
    for name, addr in r.table(data or {}, where).items():
        r.text(name, f"{where}.{name}", _LABEL, _DNS_LABEL)
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
        name=r.text(u["name"], f"{where}.name", _LABEL, _USER),
        groups=r.items(u.get("groups"), f"{where}.groups",
                       lambda g, at: r.text(g, at, _LABEL, "a group name"), "group names"),
        ssh_keys=keys,
        ssh_key_files=files,
    )


def _public_key(r: _Reader, value: Any, where: str) -> str:
    """An OpenSSH public key line whose base64 blob really encodes a key of the named type."""
    what = "an OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
    key = r.text(value, where, _KEY, what)
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
    if not _LABEL.match(name):
        raise r.fail(where, f"host name {name!r} is not a valid DNS label (a-z, 0-9 and -, at most 63)")
    h = r.mapping(data, where, required={"role", "ip", "mac", "boot_disk"},
                  optional={"data_partition", "wan", "vars"})
    role = h["role"]
    if role not in ROLES:
        raise r.fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    mac = r.text(h["mac"], f"{where}.mac", what="a MAC address")
    if not _MAC.match(mac.lower()):
        raise r.fail(f"{where}.mac", f"{mac!r} is not a MAC address like dc:a6:32:01:02:03")
    wan = _wan(r, h["wan"], f"{where}.wan") if h.get("wan") is not None else None
    if wan is not None and role != "gateway":
        raise r.fail(f"{where}.wan", "only the gateway has a WAN side; remove it or make the host the gateway")
    all_vars, group_vars = shared
    layers = (all_vars, group_vars.get(role, {}), _vars(r, h.get("vars"), f"{where}.vars"))
    return model.Host(
        name=name, role=role, ip=r.ip(h["ip"], f"{where}.ip"), mac=mac.lower(),
        boot_disk=r.text(h["boot_disk"], f"{where}.boot_disk", what="a device path such as /dev/sda"),
        data_partition=_data_partition(r, h.get("data_partition"), f"{where}.data_partition"),
        wan=wan, vars=layered(*layers), automation_user=cluster.automation_user, settings=settings_of(*layers),
    )


def _data_partition(r: _Reader, data: Any, where: str) -> model.DataPartition | None:
    if data is None:
        return None
    dp = r.mapping(data, where, required={"device", "start"})
    start = str(dp["start"])
    if not _SIZE.match(start):
        raise r.fail(f"{where}.start", f"expected a size such as 30G, got {start!r}")
    return model.DataPartition(device=r.text(dp["device"], f"{where}.device", what="a device path"), start=start)


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
        wifi = model.Wifi(ssid=r.text(wf["ssid"], f"{where}.wifi.ssid"),
                    password_secret=r.text(wf["password_secret"], f"{where}.wifi.password_secret"))
    return model.Wan(
        interface=r.text(w["interface"], f"{where}.interface"),
        address=address,
        gateway=r.ip(w["gateway"], f"{where}.gateway") if w.get("gateway") is not None else None,
        wifi=wifi,
    )


def _lab(r: _Reader, data: Any) -> model.LabSettings:
    lab = r.mapping(data, "lab", required={"bridge", "state_dir"}, optional={"apt_proxy_port"})
    return model.LabSettings(
        bridge=r.text(lab["bridge"], "lab.bridge", _BRIDGE, "an interface name (a-z, 0-9, at most 15)"),
        apt_proxy_port=r.converted(lab.get("apt_proxy_port", 3142), "lab.apt_proxy_port", port),
        state_dir=r.local_path(lab["state_dir"], "lab.state_dir"),
    )
