"""The typed inventory: the cluster, its hosts and how to reach them, as the loader builds them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from picluster.inventory import grammar
from picluster.inventory.settings import HostSettings, settings_of

ROLES = ("gateway", "server", "agent")


class InventoryError(Exception):
    """An inventory that cannot be used; the message is one line that says what to fix."""


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
            for number, line in enumerate(text.split("\n"), 1):
                line = line.removesuffix("\r").strip(" \t")
                if not line or line.startswith("#"):
                    continue
                if not grammar.ssh_public_key_line(line):
                    raise InventoryError(f"admin user {self.name}: {path}: line {number} is not one OpenSSH public "
                                         "key line ('ssh-ed25519 AAAA... comment'); fix ssh_key_files")
                keys.append(line)
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
class Device:
    """A LAN device that is not a node (a switch, the controller): a DNS record, and a DHCP reservation
    when its MAC is known."""

    name: str
    ip: IPv4Address
    mac: str | None = None


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
    settings: HostSettings = field(default_factory=settings_of)  # the `vars` layer over the defaults
    devices: Mapping[str, Device] = field(default_factory=dict)  # other LAN devices: DHCP and DNS only

    def select(self, roles: Iterable[str] | None = None, limit: Iterable[str] | None = None) -> list[Host]:
        """Hosts in file order, narrowed to `roles` and to the names in `limit` (unknown names fail)."""
        wanted = set(roles) if roles is not None else None
        names = self._limit(limit) if limit is not None else None
        return [
            h for h in self.hosts.values()
            if (wanted is None or h.role in wanted) and (names is None or h.name in names)
        ]

    def _limit(self, limit: Iterable[str]) -> set[str]:
        names = {n.strip() for n in limit if n.strip()}
        unknown = sorted(names - set(self.hosts))
        if unknown:
            raise InventoryError(
                f"{self.path}: --limit names unknown host(s) {', '.join(unknown)}; known: {', '.join(self.hosts)}"
            )
        return names

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
