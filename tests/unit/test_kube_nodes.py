"""Nodes through the official client against kmock's API over HTTP: listing, labels, cordon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kmock as km
import pytest
from kube_support import TOKEN, kube_for, node, run, seed, server_faults, write_kubeconfig

from picluster.kube import Kube, KubeError
from picluster.kube.nodes import WORKER_LABELS, cordon, get_node, label, list_nodes, uncordon

pytestmark = pytest.mark.asyncio


@pytest.fixture
def kube(kmock: km.KubernetesEmulator, tmp_path: Path) -> Iterator[Kube]:
    yield kube_for(kmock, tmp_path)
    assert server_faults(kmock) == []


def patches(mock: km.KubernetesEmulator, name: str) -> list[km.Request]:
    return list(mock["patch", km.resource("v1/nodes"), km.name(name)])


async def test_list_nodes_reports_ready_roles_and_cordon(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock,
         node("node2", ready=False, ip="10.0.0.12", labels=WORKER_LABELS),
         node("node1", roles=("control-plane", "master"), ip="10.0.0.11", unschedulable=True))

    nodes = await run(list_nodes, kube)

    assert [n.name for n in nodes] == ["node1", "node2"]
    n1, n2 = nodes
    assert n1.ready and n1.is_server and n1.roles == ("control-plane", "master")
    assert n1.status == "Ready,SchedulingDisabled" and n1.internal_ip == "10.0.0.11"
    assert n1.kubelet_version == "v1.24.3+k3s1"
    assert not n2.ready and not n2.is_server and n2.roles == ("worker",)
    assert n2.reason == "KubeletNotReady: container runtime network not ready"
    request = kmock[km.resource("v1/nodes")][0]
    assert request.method == "GET" and request.url.path == "/api/v1/nodes"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"   # the kubeconfig's credentials were used


async def test_explicit_server_overrides_the_kubeconfig_and_leaves_globals_alone(
        kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    from kubernetes import client

    before = client.Configuration.get_default_copy().host
    config = write_kubeconfig(tmp_path / "k3s.yaml", "https://127.0.0.1:1")    # as fetched: nothing listens
    seed(kmock, node("node1"))

    nodes = await run(list_nodes, Kube(config, server=str(kmock.url)))

    assert [n.name for n in nodes] == ["node1"]
    assert client.Configuration.get_default_copy().host == before


async def test_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(KubeError) as err:
        await run(list_nodes, Kube(tmp_path / "absent.yaml"))
    assert str(err.value).startswith(f"{tmp_path / 'absent.yaml'}: cannot load the kubeconfig")
    assert "\n" not in str(err.value)


async def test_unknown_node_is_named(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    with pytest.raises(KubeError, match="node node9 is not registered with the API server"):
        await run(get_node, kube, "node9")


async def test_label_patches_only_what_differs(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2", labels={"node_type": "worker", "old": "x"}))

    changed = await run(label, kube, "node2", {**WORKER_LABELS, "node_type": "worker", "old": None})

    assert changed
    (request,) = patches(kmock, "node2")
    assert request.headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert request.data == {"metadata": {"labels": {**WORKER_LABELS, "old": None}}}
    labels = kmock.objects["v1/nodes", None, "node2"]["metadata"]["labels"]
    assert labels["kubernetes.io/role"] == "worker" and "old" not in labels

    assert not await run(label, kube, "node2", WORKER_LABELS)     # already so: read, no second PATCH
    assert len(patches(kmock, "node2")) == 1


async def test_bad_label_is_refused_before_any_request(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"))
    with pytest.raises(KubeError, match="label node_type: value 'a b' is not valid"):
        await run(label, kube, "node2", {"node_type": "a b"})
    with pytest.raises(KubeError, match="label key 'bad key' is not valid"):
        await run(label, kube, "node2", {"bad key": "x"})
    assert len(kmock) == 0


async def test_cordon_and_uncordon_send_the_patch_once(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node3"))

    assert await run(cordon, kube, "node3")
    assert not await run(cordon, kube, "node3")           # already cordoned: no second PATCH
    assert [r.data for r in patches(kmock, "node3")] == [{"spec": {"unschedulable": True}}]
    assert kmock.objects["v1/nodes", None, "node3"]["spec"]["unschedulable"] is True

    assert await run(uncordon, kube, "node3")
    assert not await run(uncordon, kube, "node3")
    assert [r.data for r in patches(kmock, "node3")][1:] == [{"spec": {"unschedulable": None}}]
    assert "unschedulable" not in kmock.objects["v1/nodes", None, "node3"]["spec"]
    assert (await run(get_node, kube, "node3")).status == "Ready"
