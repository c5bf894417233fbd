"""cluster.reboot: one node at a time, servers first; the SSH reboot wait; the API part against kmock over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import kmock as km
import pytest
from kube_support import all_evictions, allow_eviction, kube_for, node, pod, run, seed, server_faults
from ops_support import inventory

from picluster.inventory import Host
from picluster.ops import reboot as rb


def test_ssh_reboot_waits_for_a_new_boot_id(tmp_path: Path) -> None:
    host = inventory(tmp_path).hosts["node2"]
    answers = iter(["old", None, None, "old", "new"])
    ran: list[str] = []
    took = rb.ssh_reboot(host, poll_s=0.01, reader=lambda h, t: next(answers),
                         command=lambda h, script: ran.append(script) or "")
    assert took >= 0 and len(ran) == 1 and "systemctl reboot" in ran[0] and "--on-active=2" in ran[0]


def test_ssh_reboot_says_which_host_did_not_come_back(tmp_path: Path) -> None:
    host = inventory(tmp_path).hosts["node3"]
    with pytest.raises(rb.NotBack, match=r"^node3 did not come back within 0s"):
        rb.ssh_reboot(host, wait_s=0.05, poll_s=0.01, reader=lambda h, t: "old", command=lambda h, s: "")
    with pytest.raises(rb.NotBack, match=r"^node3 does not answer SSH, so it was not rebooted"):
        rb.ssh_reboot(host, reader=lambda h, t: None, command=lambda h, s: "")


def test_without_an_api_each_node_is_rebooted_in_order_and_the_kube_steps_say_why_they_were_skipped(
        tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=2).hosts.values())
    rebooted: list[str] = []

    result = rb.rolling_reboot(hosts, kube_note="no kubeconfig at /x", reboot=lambda h: rebooted.append(h.name) or 1.0)

    assert not result.failed and result.done == rebooted == ["node1", "node2", "node3"]
    skips = [(e.host, e.what) for e in result.timeline.events if e.what.endswith("skipped")]
    assert skips[:4] == [("node1", "cordon skipped"), ("node1", "drain skipped"), ("node1", "wait Ready skipped"),
                         ("node1", "uncordon skipped")]
    assert all(e.detail == "no kubeconfig at /x" for e in result.timeline.events if e.what.endswith("skipped"))
    assert "gateway: not a K3S node" in result.notes[0]
    assert "cordon, drain, wait Ready and uncordon skipped: no kubeconfig at /x" in result.notes[1]


def test_the_first_node_that_does_not_come_back_stops_the_roll(tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=3).hosts.values())

    def reboot(h: Host) -> float:
        if h.name == "node3":
            raise rb.NotBack("node3 did not come back within 600s after its reboot")
        return 1.0

    result = rb.rolling_reboot(hosts, reboot=reboot)

    assert result.failed and result.failed_node == "node3"
    assert result.done == ["node1", "node2"] and result.not_started == ["node4"]
    assert result.error.startswith("node3 (agent): reboot failed: node3 did not come back within 600s")


@pytest.mark.asyncio
async def test_with_the_api_each_node_is_cordoned_drained_rebooted_waited_and_uncordoned(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    hosts = list(inventory(tmp_path, agents=1).hosts.values())
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"), pod("web-7d4b9-abcde", "node2"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde")
    kube = kube_for(kmock, tmp_path)
    loop = asyncio.get_running_loop()
    boots = itertools.count(1)

    def comes_back(name: str) -> None:       # NotReady with the old boot ID, then Ready with a new one
        obj = kmock.objects["v1/nodes", None, name]
        obj.patch({"status": node(name, ready=False)["status"]})
        new = {"status": {**node(name)["status"], "nodeInfo": {"bootID": f"boot-{next(boots)}"}}}
        loop.call_later(0.2, lambda: obj.patch(new))

    def reboot(h: Host) -> float:
        assert kmock.objects["v1/nodes", None, h.name]["spec"]["unschedulable"] is True
        loop.call_soon_threadsafe(comes_back, h.name)
        return 0.1

    result = await run(rb.rolling_reboot, hosts, kube=kube, reboot=reboot, ready_timeout=5, drain_timeout=5,
                       progress=False, poll=0.05)

    assert not result.failed, result.error
    assert result.done == ["node1", "node2"]
    steps = [(e.host, e.what) for e in result.timeline.events if e.host != "cluster"]
    assert steps == [(n, s) for n in ("node1", "node2")
                     for s in ("cordon", "drain", "reboot", "back", "wait_ready", "uncordon")]
    assert [r.url.path for r in all_evictions(kmock)] == ["/api/v1/namespaces/default/pods/web-7d4b9-abcde/eviction"]
    assert all("unschedulable" not in kmock.objects["v1/nodes", None, n]["spec"] for n in ("node1", "node2"))
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_node_the_api_does_not_know_skips_the_kube_steps_with_the_reason(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    hosts = [h for h in inventory(tmp_path, agents=1).hosts.values() if h.is_k3s]
    seed(kmock, node("node1", roles=("control-plane",)))
    result = await run(rb.rolling_reboot, hosts, kube=kube_for(kmock, tmp_path), reboot=lambda h: 0.1)
    assert not result.failed and result.done == ["node1", "node2"]
    assert "node2 not registered with the API server" in result.notes[0]
    assert list(kmock["patch"]) == []
