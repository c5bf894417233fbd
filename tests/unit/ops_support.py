"""Helpers for the ops tests: a small inventory on loopback addresses, hosts that power off on cue."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from picluster.inventory import Host, Inventory, load_inventory
from picluster.ops.power import PowerObserver
from picluster.ops.status import Facts
from picluster.remote import ProbeOutput

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q test"
KUBELET_LOCK = "kubelet 0 root 1234 k3s-agent shutdown Kubelet needs time to handle node shutdown delay"


def inventory(tmp_path: Path, agents: int = 3, grace: int = 30) -> Inventory:
    """gateway, node1 (server), node2.. (agents) on 127.0.0.x; nothing is ever connected to."""
    hosts: dict[str, Any] = {
        "gateway": {"role": "gateway", "ip": "127.0.0.1", "mac": "02:00:00:00:00:01", "boot_disk": "/dev/sda"},
        "node1": {"role": "server", "ip": "127.0.0.11", "mac": "02:00:00:00:00:11", "boot_disk": "/dev/sda"},
    }
    for i in range(2, agents + 2):
        hosts[f"node{i}"] = {"role": "agent", "ip": f"127.0.0.{10 + i}", "mac": f"02:00:00:00:00:{10 + i}",
                             "boot_disk": "/dev/sda"}
    data = {
        "cluster": {
            "name": "loop", "domain": "loop.test",
            "lan": {"cidr": "127.0.0.0/24", "gateway": "127.0.0.1", "dhcp_range": ["127.0.0.32", "127.0.0.99"]},
            "metallb_pool": ["127.0.0.100", "127.0.0.200"], "controller": "127.0.0.2",
            "automation_user": "picluster",
            "admin_users": [{"name": "picluster", "ssh_keys": [KEY]}],
        },
        "vars": {"kubelet_shutdown_grace_period": grace, "kubelet_shutdown_grace_period_critical_pods": 10},
        "hosts": hosts,
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


def facts(host: Host, *, lock: bool = True, delay_s: float = 30, service: str = "active") -> Facts:
    """What preflight reads on a healthy node (or one without the kubelet's lock / with a short delay)."""
    out = {"boot_id": ProbeOutput("b0\n")}
    if host.is_k3s:
        out["inhibitors"] = ProbeOutput((KUBELET_LOCK + "\n") if lock else "No inhibitors.\n")
        out["delay"] = ProbeOutput(f"t {int(delay_s * 1e6)}\n")
        out["service"] = ProbeOutput(service + "\n", 0 if service == "active" else 3)
    return Facts(host.name, out)


class FakeCluster:
    """Hosts that go down `takes` seconds after their poweroff (never, for `stuck` ones); records the order."""

    def __init__(self, takes: float = 0.05, stuck: frozenset[str] = frozenset(),
                 refuse: frozenset[str] = frozenset()) -> None:
        self.takes, self.stuck, self.refuse = takes, stuck, refuse
        self.asked: dict[str, float] = {}
        self.log: list[str] = []
        self._lock = threading.Lock()

    def poweroff(self, host: Host) -> str:
        if host.name in self.refuse:
            return f"{host.name}: `systemctl poweroff` exited 1: Access denied"
        with self._lock:
            self.asked[host.name] = time.monotonic()
            self.log.append(f"poweroff {host.name}")
        return ""

    def stopped(self, name: str) -> bool:
        at = self.asked.get(name)
        return at is not None and name not in self.stuck and time.monotonic() - at >= self.takes

    def observer(self) -> PowerObserver:
        return PowerObserver(self.stopped, probe=lambda address, port: "refused")
