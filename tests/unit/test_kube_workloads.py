"""Startup waits against kmock's API over HTTP: Deployments, StatefulSets and DaemonSets ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kmock as km
import pytest
from kube_support import daemonset, deployment, kube_for, run, seed, server_faults

from picluster.kube import Kube
from picluster.kube.workloads import WorkloadsNotReady, workloads, workloads_ready

pytestmark = pytest.mark.asyncio


@pytest.fixture
def kube(kmock: km.KubernetesEmulator, tmp_path: Path) -> Iterator[Kube]:
    yield kube_for(kmock, tmp_path)
    assert server_faults(kmock) == []


async def test_waits_for_workloads_in_the_named_namespaces(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock,
         deployment("coredns", "kube-system", replicas=1, available=1),
         daemonset("svclb-traefik", "kube-system", desired=4, available=4),
         deployment("metallb-controller", "metallb-system", replicas=2, available=0),
         deployment("other", "elsewhere", replicas=1, available=0))     # not asked for: never blocks
    kmock.resources["apps/v1/statefulsets"] = {}                        # known to the API, none exist
    ready = {"status": {"availableReplicas": 2, "readyReplicas": 2}}
    kmock["list", km.resource("apps/v1/deployments"), km.namespace("metallb-system")][2:3] >> (
        lambda: kmock.objects["apps/v1/deployments", "metallb-system", "metallb-controller"].patch(ready))

    found = await run(workloads_ready, kube, ["kube-system", "metallb-system"], 10, interval=0.05, progress=False)

    assert sorted(str(w) for w in found) == [
        "DaemonSet kube-system/svclb-traefik 4/4 ready",
        "Deployment kube-system/coredns 1/1 ready",
        "Deployment metallb-system/metallb-controller 2/2 ready",
    ]
    paths = {r.url.path for r in kmock["list"]}
    assert paths == {f"/apis/apps/v1/namespaces/{ns}/{kind}" for ns in ("kube-system", "metallb-system")
                     for kind in ("deployments", "statefulsets", "daemonsets")}
    assert len(kmock["list", km.resource("apps/v1/deployments"), km.namespace("metallb-system")]) == 3


async def test_timeout_lists_what_is_not_ready(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, deployment("longhorn-ui", "longhorn-system", replicas=2, available=1),
         daemonset("longhorn-manager", "longhorn-system", desired=3, available=3))
    kmock.resources["apps/v1/statefulsets"] = {}

    with pytest.raises(WorkloadsNotReady) as err:
        await run(workloads_ready, kube, ["longhorn-system"], 0.3, interval=0.05, progress=False)

    assert [str(w) for w in err.value.waiting] == ["Deployment longhorn-system/longhorn-ui 1/2 ready"]
    assert str(err.value).startswith("workloads in longhorn-system not ready after 0.3s: "
                                     "Deployment longhorn-system/longhorn-ui 1/2 ready; look at `kubectl")


async def test_a_rollout_in_progress_is_not_ready(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    web = deployment("web", "apps", replicas=2, available=2)
    web["metadata"]["generation"] = 2                                   # the controller has not seen it yet
    seed(kmock, web)
    kmock.resources["apps/v1/statefulsets"] = {}
    kmock.resources["apps/v1/daemonsets"] = {}

    (found,) = await run(workloads, kube, None)

    assert not found.ok and str(found) == "Deployment apps/web 2/2 ready, rollout in progress"
    assert {r.url.path for r in kmock["list"]} == {"/apis/apps/v1/deployments", "/apis/apps/v1/statefulsets",
                                                  "/apis/apps/v1/daemonsets"}
