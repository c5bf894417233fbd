"""Waiting for nodes Ready against kmock's API over HTTP: success, and a timeout that says where to look."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import kmock as km
import pytest
from kube_support import kube_for, node, run, seed, server_faults, write_kubeconfig
from rich.console import Console

from picluster.kube import Kube
from picluster.kube.nodes import NodeInfo
from picluster.kube.wait import NodesNotReady, wait_ready

pytestmark = pytest.mark.asyncio


@pytest.fixture
def kube(kmock: km.KubernetesEmulator, tmp_path: Path) -> Iterator[Kube]:
    yield kube_for(kmock, tmp_path)
    assert server_faults(kmock) == []


async def test_waits_until_every_node_is_ready_and_shows_progress(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2", ready=False))
    # The kubelet comes up just before the third poll is answered.
    nodes_view = kmock["list", km.resource("v1/nodes")]
    nodes_view[2:3] >> (lambda: kmock.objects["v1/nodes", None, "node2"].patch(node("node2")))
    out = io.StringIO()

    nodes = await run(wait_ready, kube, ["node1", "node2"], 10, interval=0.05,
                      console=Console(file=out, width=120, force_terminal=False))

    assert [(n.name, n.ready) for n in nodes] == [("node1", True), ("node2", True)]
    polls = list(kmock["get", km.resource("v1/nodes")])
    assert len(polls) == 3                              # it polled until node2 turned Ready, then stopped
    assert "nodes Ready" in out.getvalue() and "2/2" in out.getvalue()


async def test_timeout_names_each_missing_node_and_its_journal(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock,
         node("node1", roles=("control-plane", "master"), ready=False, reason="KubeletNotReady",
              message="PLEG is not healthy"),
         node("node2"),
         node("node3", ready=False))
    start = time.monotonic()

    with pytest.raises(NodesNotReady) as err:
        await run(wait_ready, kube, ["node1", "node2", "node3", "node4"], 0.4, servers={"node1"},
                  interval=0.05, progress=False)

    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert message.startswith("nodes not Ready after 0.4s: ")
    assert set(err.value.missing) == {"node1", "node3", "node4"}
    assert "node1 (server): NotReady (KubeletNotReady: PLEG is not healthy); on node1 look at " \
           "`systemctl status k3s` and `journalctl -u k3s`" in message
    assert "node3 (agent): NotReady (KubeletNotReady: container runtime network not ready); " \
           "on node3 look at `systemctl status k3s-agent` and `journalctl -u k3s-agent`" in message
    assert "node4 (agent): never registered with the API server; on node4 look at" in message
    assert "node2" not in message


async def test_an_api_that_does_not_answer_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:                       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube = Kube(write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}"), request_timeout=1)

    with pytest.raises(NodesNotReady) as err:
        await run(wait_ready, kube, ["node1"], 0.2, servers={"node1"}, interval=0.05, progress=False)

    message = str(err.value)
    assert "node1 (server): state unknown (API unreachable)" in message
    assert "the API server did not answer at the end: cannot list nodes at" in message
    assert "journalctl -u k3s`" in message


async def test_a_ready_node_can_be_held_back_by_a_check(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"))                       # still Ready in the API, on the old kubelet

    def upgraded(n: NodeInfo) -> str | None:
        return None if n.kubelet_version == "v1.24.4+k3s1" else f"its kubelet is {n.kubelet_version}"

    with pytest.raises(NodesNotReady) as err:
        await run(wait_ready, kube, ["node2"], 0.2, interval=0.05, check=upgraded, progress=False)

    assert "node2 (agent): Ready but its kubelet is v1.24.3+k3s1; on node2 look at" in str(err.value)
