"""cluster.startup: the wait order, a host that does not come up, and the API part against kmock over HTTP."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import kmock as km
import pytest
from kube_support import deployment, kube_for, node, run, seed, server_faults
from ops_support import inventory

from picluster.inventory import Host
from picluster.ops import startup as su
from picluster.ops.shutdown import SHUTDOWN_LABEL, SHUTDOWN_LABEL_VALUE
from picluster.remote import ProbeOutput


def test_order_is_gateway_then_servers_then_agents(tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path).hosts.values())
    assert [(g, [h.name for h in m]) for g, m in su.order(hosts[::-1])] == [
        ("gateway", ["gateway"]), ("servers", ["node1"]), ("agents", ["node4", "node3", "node2"])]


def test_booted_needs_systemd_up_and_an_installed_k3s_active(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    node2, gateway = inv.hosts["node2"], inv.hosts["gateway"]

    def out(system: str, installed: str = "yes", service: str = "active") -> dict[str, ProbeOutput]:
        return {"system": ProbeOutput(system + "\n"), "k3s_installed": ProbeOutput(installed + "\n"),
                "service": ProbeOutput(service + "\n")}

    assert su.booted(node2, out("running")) is None
    assert su.booted(node2, out("degraded")) is None
    assert su.booted(node2, out("starting")) == "systemd is starting"
    assert su.booted(node2, out("running", service="activating")) == "k3s-agent is activating"
    assert su.booted(node2, out("running", installed="", service="inactive")) is None   # no k3s here
    assert su.booted(gateway, {"system": ProbeOutput("running\n")}) is None


class Boots:
    """Hosts that come up `after` seconds from the start (never for `dead`); records when each was first asked."""

    def __init__(self, after: dict[str, float], dead: frozenset[str] = frozenset()) -> None:
        self.start = time.monotonic()
        self.after, self.dead = after, dead
        self.first_asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: Host, deadline: float) -> str | None:
        with self._lock:
            self.first_asked.setdefault(host.name, time.monotonic() - self.start)
        while time.monotonic() < deadline:
            if host.name not in self.dead and time.monotonic() - self.start >= self.after.get(host.name, 0):
                return None
            time.sleep(0.01)
        return "no SSH answer"


def test_each_group_is_waited_for_before_the_next(tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=2).hosts.values())
    boots = Boots({"gateway": 0.2, "node1": 0.3})

    result = su.startup(hosts, waiter=boots.wait, timeout=5)

    assert not result.failed
    assert boots.first_asked["node1"] >= 0.2 and min(boots.first_asked["node2"], boots.first_asked["node3"]) >= 0.3
    assert result.up["gateway"] < result.up["node1"] <= min(result.up["node2"], result.up["node3"])
    assert "skipped: no Kubernetes API" in result.notes[0]


def test_a_server_that_does_not_come_up_stops_the_wait_and_says_which(tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=2).hosts.values())
    result = su.startup(hosts, waiter=Boots({}, dead=frozenset({"node1"})).wait, timeout=0.3)
    assert result.failed
    assert result.error.startswith("node1 not up after 0.3s (node1: no SSH answer); not waited for: node2, node3")
    assert "node2" not in result.up


@pytest.mark.asyncio
async def test_nodes_ready_then_only_what_shutdown_cordoned_is_uncordoned_then_workloads(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=2).hosts.values())
    seed(kmock, node("node1", roles=("control-plane",)),
         node("node2", ready=False, unschedulable=True, labels={SHUTDOWN_LABEL: SHUTDOWN_LABEL_VALUE}),
         node("node3", unschedulable=True),                                     # cordoned by someone else
         deployment("coredns", "kube-system", replicas=1, available=0))
    kmock.resources["apps/v1/statefulsets"] = {}
    kmock.resources["apps/v1/daemonsets"] = {}
    kmock["list", km.resource("v1/nodes")][3:4] >> (
        lambda: kmock.objects["v1/nodes", None, "node2"].patch({"status": node("node2")["status"]}))
    kmock["list", km.resource("apps/v1/deployments")][2:3] >> (
        lambda: kmock.objects["apps/v1/deployments", "kube-system", "coredns"].patch(
            {"status": {"availableReplicas": 1, "readyReplicas": 1}}))
    kube = kube_for(kmock, tmp_path)

    result = await run(su.startup, hosts, waiter=Boots({}).wait, kube_factory=lambda: (kube, ""), timeout=5,
                       ready_timeout=10, workloads_timeout=10, progress=False, poll=0.05)

    assert not result.failed, result.error
    assert result.uncordoned == ["node2"]
    n2 = kmock.objects["v1/nodes", None, "node2"]
    assert "unschedulable" not in n2["spec"] and SHUTDOWN_LABEL not in n2["metadata"]["labels"]
    assert kmock.objects["v1/nodes", None, "node3"]["spec"]["unschedulable"] is True
    assert any(n.startswith("node3 is cordoned, not by cluster.shutdown") for n in result.notes)
    whats = [e.what for e in result.timeline.events if e.host == "cluster"]
    assert whats == ["waiting for nodes Ready", "nodes Ready", "waiting for workloads", "workloads ready", "done"]
    assert server_faults(kmock) == []


def test_wait_up_gives_up_at_the_deadline_saying_ssh_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as s:          # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node2 = inventory(tmp_path).hosts["node2"]
    host = dataclasses.replace(node2, ip=IPv4Address("127.0.0.1"),
                               settings=dataclasses.replace(node2.settings, ssh_port=port))
    started = time.monotonic()
    why = su.wait_up(host, time.monotonic() + 0.5, poll=0.05)
    assert why is not None and why.startswith("no SSH answer (")
    assert 0.5 <= time.monotonic() - started < 5
