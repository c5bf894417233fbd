"""Eviction-based drain against kmock's API over HTTP: skips, PodDisruptionBudgets, pods that will not go."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import kmock as km
import pytest
from kube_support import (
    all_evictions,
    allow_eviction,
    evictions,
    kube_for,
    node,
    pod,
    refuse_eviction,
    run,
    seed,
    server_faults,
)

from picluster.kube import Kube
from picluster.kube.drain import Backoff, PodRef, drain, wait_pods_gone

pytestmark = pytest.mark.asyncio
FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2)


@pytest.fixture
def kube(kmock: km.KubernetesEmulator, tmp_path: Path) -> Iterator[Kube]:
    yield kube_for(kmock, tmp_path)
    assert server_faults(kmock) == []


def names(refs: list[PodRef]) -> list[str]:
    return sorted(str(r) for r in refs)


async def test_drain_cordons_skips_daemonset_and_mirror_pods_and_evicts_the_rest(
        kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), node("node3"),
         pod("web-7d4b9-abcde", "node2", namespace="apps"),
         pod("db-0", "node2", namespace="apps", owner="StatefulSet", owner_name="db"),
         pod("svclb-traefik-x1", "node2", namespace="kube-system", owner="DaemonSet", owner_name="svclb-traefik"),
         pod("kube-vip-node2", "node2", namespace="kube-system", mirror=True),
         pod("web-7d4b9-zzzzz", "node3", namespace="apps"))            # another node's pod: left alone
    allow_eviction(kmock, "apps", "web-7d4b9-abcde")
    allow_eviction(kmock, "apps", "db-0", linger=0.2)

    report = await run(drain, kube, "node2", 5, backoff=FAST, poll=0.05)

    assert report.ok, report.summary()
    assert names(report.evicted) == ["apps/db-0", "apps/web-7d4b9-abcde"]
    skipped = {str(ref): why for ref, why in report.skipped}
    assert skipped.keys() == {"kube-system/svclb-traefik-x1", "kube-system/kube-vip-node2"}
    assert skipped["kube-system/svclb-traefik-x1"].startswith("DaemonSet pod (svclb-traefik)")
    assert skipped["kube-system/kube-vip-node2"].startswith("mirror (static) pod")

    # What the server received: the cordon first, a pod listing by node, one Eviction per evicted pod.
    first = kmock[0]
    assert first.method == "GET" and first.url.path == "/api/v1/nodes/node2"
    (cordon,) = kmock["patch", km.resource("v1/nodes")]
    assert cordon.data == {"spec": {"unschedulable": True}}
    (listing,) = kmock["list", km.resource("v1/pods")]
    assert listing.params["fieldSelector"] == "spec.nodeName=node2"
    sent = all_evictions(kmock)
    assert sorted(r.url.path for r in sent) == ["/api/v1/namespaces/apps/pods/db-0/eviction",
                                                "/api/v1/namespaces/apps/pods/web-7d4b9-abcde/eviction"]
    assert all(r.data["apiVersion"] == "policy/v1" and r.data["kind"] == "Eviction" for r in sent)
    assert {r.data["metadata"]["name"] for r in sent} == {"db-0", "web-7d4b9-abcde"}
    assert not kmock.objects["v1/pods", "apps", "web-7d4b9-zzzzz"].deleted


async def test_eviction_refused_by_a_budget_is_retried_with_backoff(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), pod("web-7d4b9-abcde", "node2"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde", refuse=1)

    report = await run(drain, kube, "node2", 5, backoff=Backoff(initial=0.2, maximum=1.0), poll=0.05)

    assert report.ok, report.summary()
    assert names(report.evicted) == ["default/web-7d4b9-abcde"]
    assert list(report.attempts.values()) == [2]
    refused, accepted = evictions(kmock, "default", "web-7d4b9-abcde")
    assert refused.data == accepted.data                  # the same Eviction, asked again
    assert kmock.objects["v1/pods", "default", "web-7d4b9-abcde"].deleted


async def test_backoff_spaces_the_retries(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), pod("web-7d4b9-abcde", "node2"))
    stamps: list[float] = []
    allow_eviction(kmock, "default", "web-7d4b9-abcde", refuse=3, log=stamps)

    report = await run(drain, kube, "node2", 5, backoff=Backoff(initial=0.1, factor=2.0, maximum=0.3), poll=0.05)

    assert report.ok and list(report.attempts.values()) == [4]
    assert len(evictions(kmock, "default", "web-7d4b9-abcde")) == len(stamps) == 4
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.3     # doubling, capped at the maximum
    assert gaps[2] < 0.3 + 0.25


async def test_a_pod_its_budget_never_releases_is_reported_at_the_timeout(
        kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), pod("web-7d4b9-abcde", "node2"), pod("api-5c6f8-qwert", "node2"))
    refuse_eviction(kmock, "default", "web-7d4b9-abcde", budget="web-pdb")
    allow_eviction(kmock, "default", "api-5c6f8-qwert")
    start = time.monotonic()

    report = await run(drain, kube, "node2", 0.6, backoff=FAST, poll=0.05)

    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 2.0
    assert not report.ok
    assert names(report.evicted) == ["default/api-5c6f8-qwert"]
    ((ref, why),) = report.failed
    assert str(ref) == "default/web-7d4b9-abcde"
    assert why.startswith("blocked by a PodDisruptionBudget: Cannot evict pod as it would violate the pod's "
                          "disruption budget. (The disruption budget web-pdb needs 2 healthy pods")
    attempts = len(evictions(kmock, "default", "web-7d4b9-abcde"))
    assert attempts >= 3 and f"still refused after {attempts} attempts in 0.6s" in why
    assert "default/web-7d4b9-abcde: blocked by a PodDisruptionBudget" in report.summary()
    assert not kmock.objects["v1/pods", "default", "web-7d4b9-abcde"].deleted


async def test_an_evicted_pod_stuck_terminating_is_reported(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), pod("web-7d4b9-abcde", "node2"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde", linger=None)

    report = await run(drain, kube, "node2", 0.4, backoff=FAST, poll=0.05)

    ((ref, why),) = report.failed
    assert str(ref) == "default/web-7d4b9-abcde"
    assert why.startswith("evicted but still terminating after 0.4s")
    assert "kubectl -n default describe pod web-7d4b9-abcde" in why


async def test_unmanaged_pods_are_kept_unless_forced(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, node("node2"), pod("debug", "node2", owner=None))
    allow_eviction(kmock, "default", "debug")

    report = await run(drain, kube, "node2", 2, backoff=FAST, poll=0.05)
    assert not report.ok and "no controller owns it" in report.failed[0][1]
    assert all_evictions(kmock) == []

    forced = await run(drain, kube, "node2", 2, force=True, backoff=FAST, poll=0.05)
    assert forced.ok and names(forced.evicted) == ["default/debug"]


async def test_wait_pods_gone_returns_what_is_left(kmock: km.KubernetesEmulator, kube: Kube) -> None:
    seed(kmock, pod("a-1", "node2"), pod("b-1", "node2"))
    a = PodRef("default", "a-1", kmock.objects["v1/pods", "default", "a-1"]["metadata"]["uid"])
    b = PodRef("default", "b-1", kmock.objects["v1/pods", "default", "b-1"]["metadata"]["uid"])
    kmock.objects["v1/pods", "default", "a-1"].delete()

    assert await run(wait_pods_gone, kube, [a, b], 0.2, poll=0.05) == [b]
    kmock.objects["v1/pods", "default", "b-1"].patch({"metadata": {"uid": "recreated"}})   # same name, new pod
    assert await run(wait_pods_gone, kube, [a, b], 0.2, poll=0.05) == []
