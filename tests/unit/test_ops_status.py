"""cluster.status: one row per host from its facts and the API's nodes; problems named; the kubeconfig lookup."""

from __future__ import annotations

from pathlib import Path

import kmock as km
import pytest
from kube_support import kube_for, node, run, seed, server_faults
from ops_support import inventory

from picluster.facts import k3s_version
from picluster.kube.nodes import NodeInfo
from picluster.ops import status as st
from picluster.remote import ProbeOutput

PIN = "v1.24.3+k3s1"


def facts(name: str, *, k3s: str = f"k3s version {PIN} (990ba0e8)", service: str = "active") -> st.Facts:
    return st.Facts(name, {"boot_id": ProbeOutput("b\n"), "uptime": ProbeOutput("  3725\n"),
                           "os": ProbeOutput("Ubuntu 22.04.1 LTS\n"), "k3s": ProbeOutput(k3s + "\n"),
                           "service": ProbeOutput(service + "\n", 0 if service == "active" else 3)})


def api_node(name: str, *, ready: bool = True, cordoned: bool = False, kubelet: str = PIN) -> NodeInfo:
    """What list_nodes gives for a node (its parsing is tested against kmock in test_kube_nodes)."""
    return NodeInfo(name, ready, "" if ready else "KubeletNotReady: container runtime network not ready",
                    unschedulable=cordoned, kubelet_version=kubelet)


def test_a_healthy_node_has_no_problems(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    nodes = {"node2": api_node("node2")}
    row = st.host_status(inv.hosts["node2"], facts("node2"), PIN, nodes, "")
    assert (row.reachable, row.uptime, row.service, row.k3s_version, row.node, row.cordoned) == (
        True, 3725.0, "active", PIN, "Ready", False)
    assert row.problems == []


def test_problems_unreachable_other_version_inactive_notready_unregistered(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    gone = st.host_status(inv.hosts["node3"], st.Facts("node3", error="node3: cannot reach"), PIN, None, "")
    assert gone.problems == ["node3 does not answer SSH: node3: cannot reach"]
    nodes = {"node2": api_node("node2", ready=False, cordoned=True, kubelet="v1.24.2+k3s1")}
    row = st.host_status(inv.hosts["node2"], facts("node2", k3s="k3s version v1.25.0+k3s1 (x)", service="failed"),
                         PIN, nodes, "")
    assert row.node == "NotReady" and row.cordoned
    assert row.problems == [
        f"node2: k3s is v1.25.0+k3s1, pinned {PIN} (k8s/versions.yml)",
        "node2: k3s-agent is failed; look at `journalctl -u k3s-agent`",
        "node2: node NotReady (KubeletNotReady: container runtime network not ready)",
        f"node2: kubelet is v1.24.2+k3s1, pinned {PIN}"]
    missing = st.host_status(inv.hosts["node4"], facts("node4"), PIN, {}, "")
    assert missing.node == "not registered" and missing.problems == ["node4: not registered with the API server"]
    bare = st.host_status(inv.hosts["node1"], facts("node1", k3s="", service="inactive"), PIN, None, "no api")
    assert bare.problems == ["node1: k3s is not installed (run `invoke cluster.up --only k3s`)"]
    gw = st.host_status(inv.hosts["gateway"], facts("gateway"), PIN, None, "")
    assert gw.problems == [] and gw.service == ""


def test_parse_k3s_version_and_uptime_format() -> None:
    assert k3s_version("k3s version v1.24.3+k3s1 (990ba0e8)\ngo version go1.18.1\n") == "v1.24.3+k3s1"
    assert k3s_version("sh: k3s: not found") is None
    assert [st.format_uptime(s) for s in (None, 59, 3725, 90061)] == ["-", "0m59s", "1h02m", "1d01h"]


def test_kubeconfig_lookup_and_why_the_api_is_not_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inventory(tmp_path)
    from picluster import localfs
    from picluster.stages.k3s import kubeconfig_path

    monkeypatch.delenv(localfs.KUBECONFIG_ENV, raising=False)
    assert st.default_kubeconfig(inv) == kubeconfig_path(inv)          # where the k3s stage fetched it
    monkeypatch.setenv(localfs.KUBECONFIG_ENV, str(tmp_path / "k.yaml"))
    assert st.default_kubeconfig(inv) == tmp_path / "k.yaml"
    kube, why = st.open_kube(inv)
    assert kube is None and why.startswith(f"no kubeconfig at {tmp_path / 'k.yaml'}")


@pytest.mark.asyncio
async def test_open_kube_answers_with_the_api_and_waits_for_it(kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane",)))
    inv = inventory(tmp_path)
    kube = kube_for(kmock, tmp_path)
    found, why = await run(st.open_kube, inv, kube.kubeconfig)
    assert found is not None and why == ""
    # the API starting: it does not answer twice, then it does; `wait` asks again meanwhile
    kmock["list", km.resource("v1/nodes")][1:3] << 503 << {"kind": "Status", "apiVersion": "v1", "code": 503,
                                                         "status": "Failure", "message": "starting"}
    found, why = await run(st.open_kube, inv, kube.kubeconfig, wait=5, poll=0.05)
    assert found is not None and why == "", why
    assert len(list(kmock["list", km.resource("v1/nodes")])) == 4      # one, then two refused, then one
    assert server_faults(kmock) == []
