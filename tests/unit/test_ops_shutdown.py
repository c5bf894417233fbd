"""cluster.shutdown's decisions and order: preflight facts in, refusals, groups, waits and the timeline out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import kmock as km
import pytest
from kube_support import all_evictions, allow_eviction, kube_for, node, pod, refuse_eviction, run, seed, server_faults
from ops_support import FakeCluster, facts, inventory

from picluster import facts as pf
from picluster.inventory import Host
from picluster.ops import power
from picluster.ops import preflight as pre
from picluster.ops import shutdown as sd
from picluster.ops.status import Facts


def test_parse_inhibitors_reads_systemd_inhibit_list_with_spaces_in_who_and_why() -> None:
    text = ("Unattended Upgrades Shutdown 0 root 812 unattended-upgr shutdown Stop ongoing upgrades or perform "
            "upgrades before shutdown delay\n"
            "kubelet 0 root 1044 k3s-server shutdown Kubelet needs time to handle node shutdown delay\n"
            "ModemManager 0 root 700 ModemManager sleep ModemManager needs to reset devices delay\n")
    found = pf.parse_inhibitors(text)
    assert [(i.who, i.what, i.mode) for i in found] == [
        ("Unattended Upgrades Shutdown", "shutdown", "delay"), ("kubelet", "shutdown", "delay"),
        ("ModemManager", "sleep", "delay")]
    lock = pf.kubelet_lock(found)
    assert lock is not None and lock.why == "Kubelet needs time to handle node shutdown"
    assert pf.parse_inhibitors("No inhibitors.\n") == []
    assert pf.kubelet_lock(pf.parse_inhibitors(text.replace("shutdown Kubelet", "sleep Kubelet"))) is None


def test_parse_usec() -> None:
    assert pf.parse_usec("t 30000000\n") == 30.0
    assert pf.parse_usec("") is None and pf.parse_usec("Failed to get property") is None


def test_groups_agents_then_servers_then_gateway(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = list(inv.hosts.values())
    assert [(g, [h.name for h in m]) for g, m in sd.groups(hosts)] == [
        ("agents", ["node2", "node3", "node4"]), ("servers", ["node1"]), ("gateway", ["gateway"])]
    assert [g for g, _ in sd.groups(hosts, keep_gateway=True)] == ["agents", "servers"]
    assert [g for g, _ in sd.groups([inv.hosts["node1"], inv.hosts["gateway"]])] == ["servers", "gateway"]


def test_graceful_problems_name_the_missing_lock_and_a_short_logind_delay(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    node2 = inv.hosts["node2"]
    assert pre.graceful_problems(node2, facts(node2)) == []
    assert pre.graceful_problems(inv.hosts["gateway"], facts(inv.hosts["gateway"])) == []
    no_lock = pre.graceful_problems(node2, facts(node2, lock=False, service="inactive"))
    assert len(no_lock) == 1 and no_lock[0].startswith("node2: no kubelet 'delay' inhibitor lock")
    assert "(k3s-agent is inactive)" in no_lock[0]
    short = pre.graceful_problems(node2, facts(node2, delay_s=5))
    assert len(short) == 1 and "InhibitDelayMaxSec is 5s, below shutdownGracePeriod (30s)" in short[0]


def reader(inv_facts: dict[str, Facts]):  # type: ignore[no-untyped-def]
    def read(hosts: Sequence[Host]) -> dict[str, Facts]:
        return {h.name: inv_facts[h.name] for h in hosts}
    return read


def healthy(hosts: Sequence[Host], **overrides: Facts) -> dict[str, Facts]:
    return {h.name: overrides.get(h.name) or facts(h) for h in hosts}


def at(run: sd.ShutdownRun, host: str, what: str) -> float:
    event = run.timeline.first(host, what)
    assert event is not None, f"no '{what}' for {host}: {[(e.host, e.what) for e in run.timeline.events]}"
    return event.at


def test_every_agent_is_down_before_the_server_is_asked_and_the_gateway_goes_last(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster(takes=0.1)

    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, timeout=5)

    assert not run.failed, run.to_dict()
    assert run.outcome == dict.fromkeys(["gateway", "node1", "node2", "node3", "node4"], "down")
    agents_down = max(at(run, n, "down") for n in ("node2", "node3", "node4"))
    assert agents_down <= at(run, "node1", "poweroff issued")
    assert at(run, "node1", "down") <= at(run, "gateway", "poweroff issued")
    assert cluster.log[-1] == "poweroff gateway" and cluster.log[3] == "poweroff node1"
    assert any("no Kubernetes API" in n for n in run.notes)
    report = json.loads(json.dumps(run.to_dict()))
    assert [e["what"] for e in report["timeline"]][:2] == ["preflight started", "preflight done"]


def test_without_force_a_node_where_graceful_shutdown_would_not_work_refuses_everything(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster()
    read = reader(healthy(hosts, node3=facts(inv.hosts["node3"], lock=False)))

    run = sd.shutdown(inv, hosts, read=read, poweroff=cluster.poweroff, observer=cluster.observer(), poll=0.02)

    assert run.refused.startswith("graceful node shutdown would not work on node3; nothing was powered off")
    assert cluster.log == [] and set(run.outcome.values()) == {"not started"}

    forced = sd.shutdown(inv, hosts, read=read, poweroff=cluster.poweroff, observer=cluster.observer(), poll=0.02,
                         force=True, timeout=5)
    assert not forced.failed and len(cluster.log) == 5
    assert forced.problems and "--force" in forced.notes[0]


def test_an_unreachable_node_is_reported_and_skipped(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster()
    gone = Facts("node3", error="node3: cannot reach 127.0.0.13:22 (connection refused)")

    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts, node3=gone)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, timeout=5)

    assert not run.failed
    assert run.outcome["node3"] == "unreachable" and run.unreachable == {"node3": gone.error}
    assert "poweroff node3" not in cluster.log and len(cluster.log) == 4
    assert run.problems == []


def test_an_agent_that_does_not_go_down_stops_the_run_before_the_servers(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster(stuck=frozenset({"node2"}))

    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, timeout=0.5)

    assert run.stopped.startswith("node2 not down: node1, gateway left running so the order holds")
    assert run.outcome == {"gateway": "left running", "node1": "left running", "node2": "still up",
                           "node3": "down", "node4": "down"}
    assert cluster.log and all(line.split()[1] in ("node2", "node3", "node4") for line in cluster.log)

    forced = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=FakeCluster().poweroff,
                         observer=cluster.observer(), timeout=0.5, force=True, poll=0.02)
    assert not forced.failed and forced.outcome["node2"] == "still up"


def test_a_refused_poweroff_is_a_failure_of_that_host(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    hosts = [inv.hosts["node2"], inv.hosts["node3"]]
    cluster = FakeCluster(refuse=frozenset({"node3"}))
    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, timeout=2)
    assert run.outcome == {"node2": "down", "node3": "failed"}
    assert "Access denied" in (run.timeline.first("node3", "poweroff failed") or sd.Event(0, 0, "", "")).detail


def test_keep_gateway_leaves_it_running(tmp_path: Path) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster()
    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, keep_gateway=True, timeout=5)
    assert run.outcome == {"gateway": "kept", "node1": "down", "node2": "down"}
    assert "poweroff gateway" not in cluster.log


def test_down_timeout_is_the_grace_period_plus_the_margin(tmp_path: Path) -> None:
    inv = inventory(tmp_path, grace=45)
    assert power.down_timeout([inv.hosts["node2"]]) == 45 + power.DOWN_MARGIN_S
    assert power.down_timeout([inv.hosts["gateway"]]) == power.DOWN_MARGIN_S


@pytest.mark.parametrize("keep", [False, True])
def test_the_printed_table_has_every_host(tmp_path: Path, keep: bool) -> None:
    from rich.console import Console

    inv = inventory(tmp_path, agents=1)
    hosts = list(inv.hosts.values())
    cluster = FakeCluster()
    run = sd.shutdown(inv, hosts, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                      observer=cluster.observer(), poll=0.02, keep_gateway=keep, timeout=5)
    console = Console(record=True, width=120)
    sd.print_shutdown(run, console)
    text = console.export_text()
    assert all(name in text for name in ("gateway", "node1", "node2")) and "total" in text
    assert ("kept" in text) is keep


# --- cordon and drain through kmock's API over HTTP ---------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_are_cordoned_and_drained_honouring_a_pdb_before_any_poweroff(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    inv = inventory(tmp_path, agents=2)
    hosts = list(inv.hosts.values())
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"), node("node3"),
         pod("web-7d4b9-abcde", "node2"), pod("web-7d4b9-fghij", "node3"),
         pod("svclb-traefik-a", "node2", owner="DaemonSet"), pod("api-0", "node1"))
    evicted_at: list[float] = []
    allow_eviction(kmock, "default", "web-7d4b9-abcde", refuse=2, log=evicted_at)   # the PDB says no twice
    allow_eviction(kmock, "default", "web-7d4b9-fghij", linger=0.2)
    kube = kube_for(kmock, tmp_path)
    cluster = FakeCluster()

    run_ = await run(sd.shutdown, inv, hosts, kube=kube, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                     observer=cluster.observer(), timeout=5, drain_timeout=10, drain_poll=0.05, poll=0.02)

    assert not run_.failed, run_.to_dict()
    assert len(evicted_at) == 3                       # 429, 429, then accepted: the budget was honoured
    drained = max(at(run_, n, "drained") for n in ("node2", "node3"))
    assert drained <= min(at(run_, n, "poweroff issued") for n in ("node2", "node3", "node1", "gateway"))
    paths = sorted(r.url.path for r in all_evictions(kmock))
    assert paths.count("/api/v1/namespaces/default/pods/web-7d4b9-abcde/eviction") == 3
    assert not any("svclb" in p or "api-0" in p for p in paths)         # DaemonSet and server pods stay
    for name in ("node2", "node3"):
        obj = kmock.objects["v1/nodes", None, name]
        assert obj["spec"]["unschedulable"] is True
        assert obj["metadata"]["labels"][sd.SHUTDOWN_LABEL] == sd.SHUTDOWN_LABEL_VALUE
    assert "unschedulable" not in kmock.objects["v1/nodes", None, "node1"]["spec"]
    assert any(line.startswith("node2: 1 pods evicted, 1 skipped, 0 not evicted") for line in run_.drain)
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_drain_a_pdb_never_allows_stops_before_anything_is_powered_off(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = list(inv.hosts.values())
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"), pod("db-0", "node2", owner="StatefulSet"))
    refuse_eviction(kmock, "default", "db-0", budget="db-pdb")
    kube = kube_for(kmock, tmp_path)
    cluster = FakeCluster()

    run_ = await run(sd.shutdown, inv, hosts, kube=kube, read=reader(healthy(hosts)), poweroff=cluster.poweroff,
                     observer=cluster.observer(), timeout=5, drain_timeout=0.6, drain_poll=0.05, poll=0.02)

    assert run_.stopped.startswith("the drain did not finish")
    assert cluster.log == []
    assert "db-pdb" in run_.drain[0] and "blocked by a PodDisruptionBudget" in run_.drain[0]
    assert kmock.objects["v1/nodes", None, "node2"]["spec"]["unschedulable"] is True   # stays cordoned

    with_force = await run(sd.shutdown, inv, hosts, kube=kube, read=reader(healthy(hosts)),
                           poweroff=cluster.poweroff, observer=cluster.observer(), timeout=5, drain_timeout=0.3,
                           drain_poll=0.05, poll=0.02, force=True)
    assert not with_force.failed and len(cluster.log) == 3
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_no_drain_never_touches_the_api(kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = list(inv.hosts.values())
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"), pod("web-1", "node2"))
    cluster = FakeCluster()
    run_ = await run(sd.shutdown, inv, hosts, kube=kube_for(kmock, tmp_path), drain=False,
                     read=reader(healthy(hosts)), poweroff=cluster.poweroff, observer=cluster.observer(),
                     timeout=5, poll=0.02)
    assert not run_.failed and len(cluster.log) == 3
    assert list(kmock["patch"]) == [] and all_evictions(kmock) == []
    assert any("--no-drain" in n for n in run_.notes)


@pytest.mark.asyncio
async def test_a_cordon_the_api_refuses_stops_before_anything_is_powered_off(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = list(inv.hosts.values())
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"))
    kmock["patch", km.resource("v1/nodes")] << 403 << {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                         "message": "nodes is forbidden", "reason": "Forbidden",
                                                         "code": 403}
    cluster = FakeCluster()
    run_ = await run(sd.shutdown, inv, hosts, kube=kube_for(kmock, tmp_path), read=reader(healthy(hosts)),
                     poweroff=cluster.poweroff, observer=cluster.observer(), timeout=5, poll=0.02)
    assert run_.stopped.startswith("the drain did not finish") and cluster.log == []
    assert run_.drain[0].startswith("node2: cordon failed: cannot label node node2: HTTP 403")
