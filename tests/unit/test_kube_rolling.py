"""Rolling upgrades and reboots: servers one at a time, then agents; cordon, drain, act, wait, uncordon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock as km
import pytest
from kube_support import all_evictions, allow_eviction, kube_for, node, pod, run, seed, server_faults

from picluster.kube.rolling import NodeSteps, RollingError, kube_steps, rolling, rolling_order


class Recorder:
    """NodeSteps that record `step node` and can fail one step on one node."""

    def __init__(self, fail: tuple[str, str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def step(self, name: str):  # type: ignore[no-untyped-def]
        def run_step(node: str) -> None:
            self.calls.append(f"{name} {node}")
            if self.fail == (name, node):
                raise RuntimeError(f"{node} did not come back")
        return run_step

    def steps(self) -> NodeSteps:
        return NodeSteps(cordon=self.step("cordon"), drain=self.step("drain"), act=self.step("upgrade"),
                         wait_ready=self.step("wait_ready"), uncordon=self.step("uncordon"))


def test_servers_one_at_a_time_then_agents() -> None:
    rec = Recorder()
    seen: list[tuple[str, str, str]] = []

    done = rolling(["node1"], ["node2", "node3"], rec.steps(), on_step=lambda *a: seen.append(a))

    assert done == ["node1", "node2", "node3"]
    assert rec.calls == [f"{step} {n}" for n in ("node1", "node2", "node3")
                         for step in ("cordon", "drain", "upgrade", "wait_ready", "uncordon")]
    assert seen[0] == ("node1", "server", "cordon") and seen[5] == ("node2", "agent", "cordon")
    assert rolling_order(["s1", "s2"], ["a1"]) == [("s1", "server"), ("s2", "server"), ("a1", "agent")]


def test_the_first_failure_stops_and_says_where() -> None:
    rec = Recorder(fail=("wait_ready", "node2"))

    with pytest.raises(RollingError) as err:
        rolling(["node1"], ["node2", "node3"], rec.steps())

    assert rec.calls[-1] == "wait_ready node2" and not any("node3" in c for c in rec.calls)
    e = err.value
    assert (e.node, e.step, e.done, e.not_started) == ("node2", "wait_ready", ["node1"], ["node3"])
    assert str(e) == ("node2 (agent): wait ready failed: node2 did not come back; node2 stays cordoned; "
                      "done: node1; not started: node3")


def test_a_node_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"more than once.*node1"):
        rolling_order(["node1"], ["node1", "node2"])


@pytest.mark.asyncio
async def test_kube_steps_roll_a_cluster_through_the_api(kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"),
         pod("web-7d4b9-abcde", "node2"), pod("svclb-traefik-a", "node2", owner="DaemonSet"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde")
    kube = kube_for(kmock, tmp_path)
    upgraded: list[str] = []
    loop = asyncio.get_running_loop()

    def restart(name: str) -> None:      # K3S restarts: NotReady, then Ready with the new kubelet
        kmock.objects["v1/nodes", None, name].patch({"status": node(name, ready=False)["status"]})
        new = {"status": {**node(name)["status"], "nodeInfo": {"kubeletVersion": "v1.24.4+k3s1"}}}
        loop.call_later(0.2, lambda: kmock.objects["v1/nodes", None, name].patch(new))

    def upgrade(name: str) -> None:                       # the SSH part, run by the roll in its thread
        upgraded.append(name)
        assert kmock.objects["v1/nodes", None, name]["spec"]["unschedulable"] is True     # cordoned by now
        loop.call_soon_threadsafe(restart, name)

    steps = kube_steps(kube, upgrade, servers=["node1"], drain_timeout=5, ready_timeout=5,
                       expect_version="v1.24.4+k3s1", progress=False, poll=0.05)

    done = await run(rolling, ["node1"], ["node2"], steps)

    assert done == upgraded == ["node1", "node2"]
    node_patches = [(r.url.path.rsplit("/", 1)[1], r.data["spec"]["unschedulable"])
                    for r in kmock["patch", km.resource("v1/nodes")]]
    assert node_patches == [("node1", True), ("node1", None), ("node2", True), ("node2", None)]
    assert [r.url.path for r in all_evictions(kmock)] == ["/api/v1/namespaces/default/pods/web-7d4b9-abcde/eviction"]
    assert "unschedulable" not in kmock.objects["v1/nodes", None, "node2"]["spec"]
    assert kmock.objects["v1/nodes", None, "node2"]["status"]["nodeInfo"]["kubeletVersion"] == "v1.24.4+k3s1"
    assert server_faults(kmock) == []
