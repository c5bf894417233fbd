"""Load and validate an inventory (hosts/*.yml) into typed objects.

Every problem is reported as one `InventoryError` line that names the file, the key path and the fix.
Vars are layered: a host's `vars` override its group's (`groups.<role>.vars`), which override `vars`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from picluster.yamlfile import read_yaml

ROLES = ("gateway", "server", "agent")
DEFAULT_INVENTORY = "hosts/inventory.yml"
INVENTORY_ENV = "PICLUSTER_INVENTORY"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
                  r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?$")
_DURATION = re.compile(r"^(\d+)(s|m)?$")
_SIZE = re.compile(r"^\d+[KMGT]?$")


class InventoryError(Exception):
    """An inventory that cannot be used; the message is one line that says what to fix."""


def default_inventory_path() -> Path:
    """The inventory to use when none is given: $PICLUSTER_INVENTORY, else hosts/inventory.yml."""
    return Path(os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


# --- the typed model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminUser:
    """A user cloud-init creates on every host, with sudo and SSH keys."""

    name: str
    groups: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    ssh_key_files: tuple[Path, ...] = ()

    def public_keys(self) -> list[str]:
        """The literal keys plus the contents of the key files (which must exist by then)."""
        keys = list(self.ssh_keys)
        for path in self.ssh_key_files:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as err:
                raise InventoryError(
                    f"admin user {self.name}: cannot read SSH public key file {path}: {err.strerror}; "
                    "create it (ssh-keygen) or fix ssh_key_files"
                ) from None
            keys.extend(line.strip() for line in text.splitlines() if line.strip())
        return keys


@dataclass(frozen=True)
class Lan:
    cidr: IPv4Network
    gateway: IPv4Address
    dhcp_range: tuple[IPv4Address, IPv4Address]
    dhcp_lease: str = "12h"


@dataclass(frozen=True)
class Cluster:
    """Settings that hold for the whole cluster."""

    name: str
    domain: str
    lan: Lan
    metallb_pool: tuple[IPv4Address, IPv4Address]
    controller: IPv4Address
    automation_user: str
    admin_users: tuple[AdminUser, ...]
    services: Mapping[str, IPv4Address]
    dns_upstream: tuple[IPv4Address, ...] = ()


@dataclass(frozen=True)
class DataPartition:
    device: str
    start: str


@dataclass(frozen=True)
class Wifi:
    ssid: str
    password_secret: str


@dataclass(frozen=True)
class Wan:
    """The gateway's home-network side."""

    interface: str
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    wifi: Wifi | None = None


@dataclass(frozen=True)
class SshTarget:
    """How to reach a host over SSH."""

    address: str
    port: int
    user: str
    key_file: Path | None = None
    known_hosts: Path | None = None


@dataclass(frozen=True)
class ShutdownGrace:
    """Graceful node shutdown: the kubelet's periods; logind's inhibit delay follows from them."""

    grace: int  # kubelet shutdownGracePeriod, seconds
    critical: int  # kubelet shutdownGracePeriodCriticalPods, seconds

    @property
    def logind_delay(self) -> int:
        """The InhibitDelayMaxSec the os stage sets: the grace period."""
        return self.grace


@dataclass(frozen=True)
class HostSettings:
    """The layered vars of one host, typed."""

    timezone: str
    locale: str
    ssh_port: int
    ssh_key_file: Path | None
    ssh_known_hosts: Path | None
    lan_interface: str
    packages: tuple[str, ...]
    ntp_upstream: tuple[str, ...]
    image: str | None  # a name in hosts/images.yml; None: the catalog's default
    k3s_node_labels: Mapping[str, str]  # labels K3S registers the node with (config.yaml node-label)
    shutdown: ShutdownGrace


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    ip: IPv4Address
    mac: str
    boot_disk: str
    data_partition: DataPartition | None
    wan: Wan | None
    vars: Mapping[str, Any]  # the raw layered vars, for `inventory.show`; stages read `settings`
    automation_user: str
    settings: HostSettings

    @property
    def ssh(self) -> SshTarget:
        return SshTarget(
            address=str(self.ip),
            port=self.settings.ssh_port,
            user=self.automation_user,
            key_file=self.settings.ssh_key_file,
            known_hosts=self.settings.ssh_known_hosts,
        )

    @property
    def is_k3s(self) -> bool:
        return self.role in ("server", "agent")


@dataclass(frozen=True)
class LabSettings:
    """Where and how the local rehearsal lab runs (only in a lab inventory)."""

    bridge: str
    apt_proxy_port: int
    state_dir: Path


@dataclass(frozen=True)
class Inventory:
    path: Path
    cluster: Cluster
    hosts: Mapping[str, Host]
    lab: LabSettings | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    settings: HostSettings = field(default_factory=lambda: settings_of({}))  # the `vars` layer over the defaults

    def select(self, roles: Iterable[str] | None = None, limit: Iterable[str] | None = None) -> list[Host]:
        """Hosts in file order, narrowed to `roles` and to the names in `limit` (unknown names fail)."""
        wanted_roles = set(roles) if roles is not None else None
        names = None
        if limit is not None:
            names = {n.strip() for n in limit if n.strip()}
            unknown = sorted(names - set(self.hosts))
            if unknown:
                raise InventoryError(
                    f"{self.path}: --limit names unknown host(s) {', '.join(unknown)}; "
                    f"known: {', '.join(self.hosts)}"
                )
        return [
            h for h in self.hosts.values()
            if (wanted_roles is None or h.role in wanted_roles) and (names is None or h.name in names)
        ]

    @property
    def servers(self) -> list[Host]:
        return self.select(roles=["server"])

    @property
    def agents(self) -> list[Host]:
        return self.select(roles=["agent"])

    @property
    def gateway(self) -> Host | None:
        found = self.select(roles=["gateway"])
        return found[0] if found else None


# --- the vars every layer may set: name -> (type check, converter, default) -------------------------


def _seconds(value: Any) -> int:
    """30, "30", "30s" or "1m" as seconds."""
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError("a duration such as 30, 30s or 1m")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError("a port number from 1 to 65535")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("a list of strings")
    return tuple(value)


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _node_labels(value: Any) -> dict[str, str]:
    """Kubernetes node labels: {key: value}, as the API accepts them."""
    what = "a mapping of Kubernetes labels such as {disktype: ssd} ([prefix/]name: value, ≤ 63 of A-Za-z0-9-_.)"
    if not isinstance(value, dict):
        raise ValueError(what)
    out = {}
    for key, val in value.items():
        text = "" if val is None else str(val)
        if not isinstance(key, str) or not _LABEL_KEY.match(key) or isinstance(val, (dict, list)) \
                or not _LABEL_VALUE.match(text):
            raise ValueError(what)
        out[key] = text
    return out


# Paths are converted by the loader (relative to the inventory file), hence `None` here.
VAR_SCHEMA: dict[str, tuple[Callable[[Any], Any] | None, Any]] = {
    "timezone": (_string, "Etc/UTC"),
    "locale": (_string, "C.UTF-8"),
    "ssh_port": (_port, 22),
    "ssh_key_file": (None, None),
    "ssh_known_hosts": (None, None),
    "kubelet_shutdown_grace_period": (_seconds, 30),
    "kubelet_shutdown_grace_period_critical_pods": (_seconds, 10),
    "lan_interface": (_string, "eth0"),
    "packages": (_string_list, ()),
    "ntp_upstream": (_string_list, ("pool.ntp.org",)),
    "image": (_string, None),
    "k3s_node_labels": (_node_labels, {}),
}
_PATH_VARS = {"ssh_key_file", "ssh_known_hosts"}


def settings_of(*layers: Mapping[str, Any]) -> HostSettings:
    """The typed settings of validated var layers, later layers overriding earlier ones and the defaults."""
    v = {k: default for k, (_c, default) in VAR_SCHEMA.items()}
    for layer in layers:
        v.update(layer)
    return HostSettings(
        timezone=v["timezone"], locale=v["locale"], ssh_port=v["ssh_port"],
        ssh_key_file=v["ssh_key_file"], ssh_known_hosts=v["ssh_known_hosts"],
        lan_interface=v["lan_interface"], packages=tuple(v["packages"]), ntp_upstream=tuple(v["ntp_upstream"]),
        image=v["image"], k3s_node_labels=dict(v["k3s_node_labels"]),
        shutdown=ShutdownGrace(grace=v["kubelet_shutdown_grace_period"],
                               critical=v["kubelet_shutdown_grace_period_critical_pods"]),
    )

T = TypeVar("T")


# --- the loader ---------------------------------------------------------------------------------------


class _Reader:
    """Walks the YAML tree, remembering the key path so every error can name it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, where: str, problem: str) -> InventoryError:
        return InventoryError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
        if value is None and not required:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping with keys {', '.join(sorted(required | optional))}")
        unknown = sorted(str(k) for k in value if k not in required | optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                            f"unknown key; allowed here: {allowed}")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(f"{where}.{missing[0]}" if where else missing[0], "missing; add it")
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected {what or 'a non-empty string'}, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"{value!r} is not {what}")
        return value

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
        text = self.string(value, where, what="a file path")
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base / p).resolve()


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read, validate and type an inventory file; raise InventoryError with one line on any problem."""
    path = Path(path)
    data = read_yaml(path, "inventory", InventoryError, f"pass --inventory PATH or set {INVENTORY_ENV}")
    return _build(_Reader(path), data)


def _build(r: _Reader, data: Any) -> Inventory:
    top = r.mapping(data, "", {"cluster", "hosts"}, {"vars", "groups", "lab"})
    cluster = _cluster(r, top["cluster"])
    all_vars = _vars(r, top.get("vars"), "vars")
    groups = r.mapping(top.get("groups"), "groups", set(), set(ROLES))
    group_vars = {
        role: _vars(r, r.mapping(g, f"groups.{role}", set(), {"vars"}).get("vars"), f"groups.{role}.vars")
        for role, g in groups.items()
    }
    hosts_data = top["hosts"]
    if not isinstance(hosts_data, dict) or not hosts_data:
        raise r.fail("hosts", "expected a mapping of host name to host settings, with at least one host")
    hosts: dict[str, Host] = {}
    for name, h in hosts_data.items():
        hosts[str(name)] = _host(r, str(name), h, cluster, all_vars, group_vars)
    lab = _lab(r, top["lab"]) if "lab" in top else None
    inv = Inventory(path=r.path, cluster=cluster, hosts=hosts, lab=lab, vars=all_vars,
                    settings=settings_of(all_vars))
    _check_consistency(r, inv)
    return inv


def _cluster(r: _Reader, data: Any) -> Cluster:
    c = r.mapping(data, "cluster",
                  {"name", "domain", "lan", "metallb_pool", "controller", "automation_user", "admin_users"},
                  {"services", "dns_upstream"})
    domain = r.string(c["domain"], "cluster.domain")
    for label in domain.split("."):
        if not _LABEL.match(label):
            raise r.fail("cluster.domain", f"{domain!r} is not a DNS name (labels of a-z, 0-9 and -)")
    lan_data = r.mapping(c["lan"], "cluster.lan", {"cidr", "gateway", "dhcp_range"}, {"dhcp_lease"})
    try:
        cidr = IPv4Network(str(lan_data["cidr"]))
    except ValueError:
        raise r.fail("cluster.lan.cidr",
                     f"expected a network such as 10.0.0.0/24, got {lan_data['cidr']!r}") from None
    lan = Lan(
        cidr=cidr,
        gateway=r.ip(lan_data["gateway"], "cluster.lan.gateway"),
        dhcp_range=r.ip_pair(lan_data["dhcp_range"], "cluster.lan.dhcp_range"),
        dhcp_lease=r.string(lan_data.get("dhcp_lease", "12h"), "cluster.lan.dhcp_lease"),
    )
    users_data = c["admin_users"]
    if not isinstance(users_data, list) or not users_data:
        raise r.fail("cluster.admin_users", "expected a list with at least one user")
    users = tuple(_admin_user(r, u, f"cluster.admin_users[{i}]") for i, u in enumerate(users_data))
    services_data = c.get("services") or {}
    if not isinstance(services_data, dict):
        raise r.fail("cluster.services", "expected a mapping of service name to address")
    services = {}
    for sname, addr in services_data.items():
        r.string(sname, f"cluster.services.{sname}", _LABEL, "a DNS label (a-z, 0-9, -)")
        services[sname] = r.ip(addr, f"cluster.services.{sname}")
    upstream = c.get("dns_upstream") or []
    if not isinstance(upstream, list):
        raise r.fail("cluster.dns_upstream", "expected a list of addresses")
    automation_user = r.string(c["automation_user"], "cluster.automation_user", _LABEL,
                               "a user name (a-z, 0-9, -)")
    if automation_user not in {u.name for u in users}:
        raise r.fail("cluster.automation_user",
                     f"{automation_user!r} is not one of admin_users; add it there so cloud-init creates it")
    return Cluster(
        name=r.string(c["name"], "cluster.name", _LABEL, "a DNS label (a-z, 0-9, -)"),
        domain=domain,
        lan=lan,
        metallb_pool=r.ip_pair(c["metallb_pool"], "cluster.metallb_pool"),
        controller=r.ip(c["controller"], "cluster.controller"),
        automation_user=automation_user,
        admin_users=users,
        services=services,
        dns_upstream=tuple(r.ip(a, f"cluster.dns_upstream[{i}]") for i, a in enumerate(upstream)),
    )


def _admin_user(r: _Reader, data: Any, where: str) -> AdminUser:
    u = r.mapping(data, where, {"name"}, {"groups", "ssh_keys", "ssh_key_files"})
    name = r.string(u["name"], f"{where}.name", _LABEL, "a user name (a-z, 0-9, -)")
    keys = u.get("ssh_keys") or []
    files = u.get("ssh_key_files") or []
    if not isinstance(keys, list) or not isinstance(files, list):
        raise r.fail(where, "ssh_keys and ssh_key_files are lists")
    if not keys and not files:
        raise r.fail(f"{where}.ssh_keys", "give at least one key (ssh_keys or ssh_key_files), "
                     "or the user could never log in")
    groups = u.get("groups") or []
    if not isinstance(groups, list):
        raise r.fail(f"{where}.groups", "expected a list of group names")
    return AdminUser(
        name=name,
        groups=tuple(r.string(g, f"{where}.groups[{i}]", _LABEL, "a group name") for i, g in enumerate(groups)),
        ssh_keys=tuple(_public_key(r, k, f"{where}.ssh_keys[{i}]") for i, k in enumerate(keys)),
        ssh_key_files=tuple(r.local_path(f, f"{where}.ssh_key_files[{i}]") for i, f in enumerate(files)),
    )


def _public_key(r: _Reader, value: Any, where: str) -> str:
    """An OpenSSH public key line whose base64 blob really encodes a key of the named type."""
    what = "an OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
    key = r.string(value, where, _KEY, what)
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
    v = r.mapping(data, where, set(), set(VAR_SCHEMA))
    out: dict[str, Any] = {}
    for key, value in v.items():
        convert, _default = VAR_SCHEMA[key]
        if key in _PATH_VARS:
            out[key] = r.local_path(value, f"{where}.{key}")
            continue
        assert convert is not None
        try:
            out[key] = convert(value)
        except ValueError as err:
            raise r.fail(f"{where}.{key}", f"expected {err}, got {value!r}") from None
    return out


def _host(r: _Reader, name: str, data: Any, cluster: Cluster, all_vars: Mapping[str, Any],
          group_vars: Mapping[str, Mapping[str, Any]]) -> Host:
    where = f"hosts.{name}"
    if not _LABEL.match(name):
        raise r.fail(where, f"host name {name!r} is not a valid DNS label (a-z, 0-9 and -, at most 63)")
    h = r.mapping(data, where, {"role", "ip", "mac", "boot_disk"}, {"data_partition", "wan", "vars"})
    role = h["role"]
    if role not in ROLES:
        raise r.fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    mac = r.string(h["mac"], f"{where}.mac", what="a MAC address")
    if not _MAC.match(mac.lower()):
        raise r.fail(f"{where}.mac", f"{mac!r} is not a MAC address like dc:a6:32:01:02:03")
    data_partition = None
    if h.get("data_partition") is not None:
        dp = r.mapping(h["data_partition"], f"{where}.data_partition", {"device", "start"}, set())
        start = str(dp["start"])
        if not _SIZE.match(start):
            raise r.fail(f"{where}.data_partition.start", f"expected a size such as 30G, got {start!r}")
        data_partition = DataPartition(
            device=r.string(dp["device"], f"{where}.data_partition.device", what="a device path"),
            start=start)
    wan = _wan(r, h["wan"], f"{where}.wan") if h.get("wan") is not None else None
    if wan is not None and role != "gateway":
        raise r.fail(f"{where}.wan", "only the gateway has a WAN side; remove it or make the host the gateway")
    host_vars = _vars(r, h.get("vars"), f"{where}.vars")
    layers = (all_vars, group_vars.get(role, {}), host_vars)
    layered = {k: default for k, (_c, default) in VAR_SCHEMA.items()}
    for layer in layers:
        layered.update(layer)
    return Host(
        name=name, role=role, ip=r.ip(h["ip"], f"{where}.ip"), mac=mac.lower(),
        boot_disk=r.string(h["boot_disk"], f"{where}.boot_disk", what="a device path such as /dev/sda"),
        data_partition=data_partition, wan=wan, vars=layered, automation_user=cluster.automation_user,
        settings=settings_of(*layers),
    )


def _wan(r: _Reader, data: Any, where: str) -> Wan:
    w = r.mapping(data, where, {"interface"}, {"address", "gateway", "wifi"})
    address = None
    if w.get("address") is not None:
        try:
            address = IPv4Interface(str(w["address"]))
        except ValueError:
            raise r.fail(f"{where}.address",
                         f"expected an address with prefix such as 192.168.1.11/24, got {w['address']!r}") from None
    wifi = None
    if w.get("wifi") is not None:
        wf = r.mapping(w["wifi"], f"{where}.wifi", {"ssid", "password_secret"}, set())
        wifi = Wifi(ssid=r.string(wf["ssid"], f"{where}.wifi.ssid"),
                    password_secret=r.string(wf["password_secret"], f"{where}.wifi.password_secret"))
    return Wan(
        interface=r.string(w["interface"], f"{where}.interface"),
        address=address,
        gateway=r.ip(w["gateway"], f"{where}.gateway") if w.get("gateway") is not None else None,
        wifi=wifi,
    )


def _lab(r: _Reader, data: Any) -> LabSettings:
    lab = r.mapping(data, "lab", {"bridge", "state_dir"}, {"apt_proxy_port"})
    bridge = r.string(lab["bridge"], "lab.bridge", re.compile(r"^[a-z][a-z0-9]{0,14}$"),
                      "an interface name (a-z, 0-9, at most 15)")
    try:
        port = _port(lab.get("apt_proxy_port", 3142))
    except ValueError as err:
        raise r.fail("lab.apt_proxy_port", f"expected {err}") from None
    return LabSettings(bridge=bridge, apt_proxy_port=port, state_dir=r.local_path(lab["state_dir"], "lab.state_dir"))


def _in_range(ip: IPv4Address, pair: tuple[IPv4Address, IPv4Address]) -> bool:
    return pair[0] <= ip <= pair[1]


def _check_consistency(r: _Reader, inv: Inventory) -> None:
    """Rules across keys: uniqueness, addresses inside the LAN, pools that do not overlap."""
    c = inv.cluster
    lan = c.lan.cidr

    def inside(ip: IPv4Address, where: str) -> None:
        if ip not in lan or ip in (lan.network_address, lan.broadcast_address):
            raise r.fail(where, f"{ip} is outside the LAN {lan}; use a host address of {lan}")

    inside(c.lan.gateway, "cluster.lan.gateway")
    inside(c.controller, "cluster.controller")
    for i, ip in enumerate(c.lan.dhcp_range):
        inside(ip, f"cluster.lan.dhcp_range[{i}]")
    for i, ip in enumerate(c.metallb_pool):
        inside(ip, f"cluster.metallb_pool[{i}]")
    pool, dhcp = c.metallb_pool, c.lan.dhcp_range
    if pool[0] <= dhcp[1] and dhcp[0] <= pool[1]:
        raise r.fail("cluster.metallb_pool",
                     f"{pool[0]}-{pool[1]} overlaps the DHCP range {dhcp[0]}-{dhcp[1]}; make them disjoint")

    seen_ip: dict[IPv4Address, str] = {}
    seen_mac: dict[str, str] = {}
    for h in inv.hosts.values():
        where = f"hosts.{h.name}"
        inside(h.ip, f"{where}.ip")
        if h.ip in seen_ip:
            raise r.fail(f"{where}.ip", f"{h.ip} is already the address of {seen_ip[h.ip]}; give each host its own")
        if h.mac in seen_mac:
            raise r.fail(f"{where}.mac", f"{h.mac} is already the MAC of {seen_mac[h.mac]}; each NIC has its own")
        seen_ip[h.ip], seen_mac[h.mac] = h.name, h.name
        if _in_range(h.ip, pool):
            raise r.fail(f"{where}.ip", f"{h.ip} lies in the MetalLB pool {pool[0]}-{pool[1]}; "
                         "move the host or shrink the pool")
        if _in_range(h.ip, dhcp):
            raise r.fail(f"{where}.ip", f"{h.ip} lies in the DHCP range {dhcp[0]}-{dhcp[1]}; "
                         "give the host an address outside it")
        if h.ip == c.controller:
            raise r.fail(f"{where}.ip", f"{h.ip} is the controller's address (cluster.controller)")
        grace, critical = h.settings.shutdown.grace, h.settings.shutdown.critical
        if critical >= grace:
            raise r.fail(f"{where}.vars.kubelet_shutdown_grace_period_critical_pods",
                         f"{critical}s leaves no time for ordinary pods within the {grace}s grace period; "
                         "make it smaller than kubelet_shutdown_grace_period")
    if not any(h.role == "server" for h in inv.hosts.values()):
        raise r.fail("hosts", "no host has role: server; K3S needs one server")
    gateways = [h.name for h in inv.hosts.values() if h.role == "gateway"]
    if len(gateways) > 1:
        raise r.fail(f"hosts.{gateways[1]}.role", f"only one gateway is supported; {gateways[0]} is one already")
    gw = inv.gateway
    if gw is not None and gw.ip != c.lan.gateway:
        raise r.fail(f"hosts.{gw.name}.ip", f"the gateway host is at {gw.ip} but cluster.lan.gateway is "
                     f"{c.lan.gateway}; make them the same")
