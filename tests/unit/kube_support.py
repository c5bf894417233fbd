"""Helpers for the kube tests: a real kubeconfig for kmock's API server, objects shaped like a K3S cluster's,
and eviction behaviour (accept, refuse for a PodDisruptionBudget, linger while terminating).

kmock's KubernetesEmulator serves its `objects` over real HTTP on 127.0.0.1; the code under test reaches it
with the official client, which is synchronous, so tests run it in a thread (`await run(fn, ...)`) while the
event loop serves the requests.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kmock as km
import yaml

from picluster.kube import Kube

T = TypeVar("T")
TOKEN = "test-token-0123456789"
_uids = itertools.count(1)

RESOURCES = {"Node": "v1/nodes", "Pod": "v1/pods", "Deployment": "apps/v1/deployments",
             "StatefulSet": "apps/v1/statefulsets", "DaemonSet": "apps/v1/daemonsets"}
EVICTION_ACCEPTED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking client code in a thread so the mock server on this loop can answer it."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig like the one K3S writes, with token auth, pointing at `server`."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": server}}],
        "users": [{"name": "default", "user": {"token": TOKEN}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    }))
    return path


def kube_for(mock: km.KubernetesEmulator, tmp_path: Path, **kwargs: Any) -> Kube:
    """A Kube handle whose kubeconfig points at the mock server."""
    url = str(mock.url).rstrip("/")
    return Kube(write_kubeconfig(tmp_path / "kubeconfig", url), request_timeout=5.0, **kwargs)


def server_faults(mock: km.KubernetesEmulator) -> list[Exception]:
    """Errors the mock server hit that were not deliberate Kubernetes answers (404s and the like).

    kmock answers a failing reaction with a 500 and keeps the exception; a test that passed with one of
    those would be passing for the wrong reason.
    """
    return [e for e in mock.errors if not isinstance(e, km.KubernetesError)]


def seed(mock: km.KubernetesEmulator, *objects: Mapping[str, Any]) -> None:
    """Store objects in the mock's API, keyed as the API would serve them."""
    for obj in objects:
        meta = obj["metadata"]
        mock.objects[RESOURCES[obj["kind"]], meta.get("namespace"), meta["name"]] = dict(obj)


def node(name: str, *, ready: bool = True, roles: Iterable[str] = (), unschedulable: bool = False,
         reason: str = "KubeletNotReady", message: str = "container runtime network not ready",
         ip: str = "10.0.0.11", labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Node as K3S registers it (roles as node-role.kubernetes.io/<role>=true labels)."""
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    all_labels.update({f"node-role.kubernetes.io/{r}": "true" for r in roles})
    all_labels.update(labels or {})
    cond: dict[str, Any] = {"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else reason,
                            "message": "kubelet is posting ready status" if ready else message}
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": f"node-{next(_uids)}", "labels": all_labels},
        "spec": {"podCIDR": "10.42.0.0/24"},
        "status": {"conditions": [cond], "addresses": [{"type": "InternalIP", "address": ip},
                                                       {"type": "Hostname", "address": name}],
                   "nodeInfo": _node_info()},
    }
    if unschedulable:
        obj["spec"]["unschedulable"] = True
    return obj


def _node_info() -> dict[str, str]:
    return {"kubeletVersion": "v1.24.3+k3s1", "kubeProxyVersion": "v1.24.3+k3s1", "architecture": "arm64",
            "bootID": "b", "containerRuntimeVersion": "containerd://1.5.13-k3s1", "kernelVersion": "5.15",
            "machineID": "m", "operatingSystem": "linux", "osImage": "Ubuntu 20.04.3 LTS", "systemUUID": "s"}


def pod(name: str, node_name: str, *, namespace: str = "default", owner: str | None = "ReplicaSet",
        owner_name: str | None = None, mirror: bool = False) -> dict[str, Any]:
    """A running Pod on a node, owned by a controller of kind `owner` (None: unmanaged)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"pod-{next(_uids)}"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "uid": f"owner-{next(_uids)}",
                                    "name": owner_name or name.rsplit("-", 1)[0], "controller": True}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc123", "kubernetes.io/config.source": "file"}
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name,
                                    "uid": "n", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox:1.36"}]},
            "status": {"phase": "Running"}}


def deployment(name: str, namespace: str, *, replicas: int, available: int) -> dict[str, Any]:
    """A Deployment whose controller has seen its spec and has `available` of `replicas` ready."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": "busybox:1.36"}]}}},
            "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                       "readyReplicas": available, "availableReplicas": available}}


def daemonset(name: str, namespace: str, *, desired: int, available: int) -> dict[str, Any]:
    """A DaemonSet with `available` of `desired` pods up."""
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": "busybox:1.36"}]}}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                       "numberMisscheduled": 0, "numberReady": available, "numberAvailable": available,
                       "updatedNumberScheduled": desired}}


def pdb_refusal(budget: str = "web-pdb") -> dict[str, Any]:
    """The Status the API server answers (429) when an eviction would violate a PodDisruptionBudget."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests", "code": 429,
            "details": {"causes": [{"reason": "DisruptionBudget",
                                    "message": f"The disruption budget {budget} needs 2 healthy pods "
                                               "and has 2 currently"}]}}


def evictions(mock: km.KubernetesEmulator, namespace: str, name: str) -> km.View:
    """The view of eviction POSTs for one pod (to attach reactions or to assert on what arrived)."""
    return mock["post", km.resource("v1/pods"), km.subresource("eviction"), km.namespace(namespace), km.name(name)]


def all_evictions(mock: km.KubernetesEmulator) -> list[km.Request]:
    """Every eviction request the server received, in order."""
    return list(mock["post", km.resource("v1/pods"), km.subresource("eviction")])


def allow_eviction(mock: km.KubernetesEmulator, namespace: str, name: str, *, refuse: int = 0,
                   linger: float | None = 0.0, budget: str = "web-pdb", log: list[float] | None = None) -> None:
    """Answer this pod's evictions: 429 (PodDisruptionBudget) `refuse` times, then 201 and delete the pod.

    `linger` is how long the accepted pod stays terminating (deletionTimestamp set) before it is gone;
    None keeps it terminating for ever (a stuck finalizer). `log` gets the arrival time of each eviction.
    """
    view = evictions(mock, namespace, name)
    if refuse:
        def refusal() -> dict[str, Any]:
            if log is not None:
                log.append(time.monotonic())
            return pdb_refusal(budget)

        view[:refuse] << 429 << refusal

    def accept(request: km.Request) -> dict[str, Any]:
        if log is not None:
            log.append(time.monotonic())
        obj = mock.objects["v1/pods", namespace, name]
        if linger == 0.0:
            obj.delete()
        else:
            stamp = datetime.datetime.now(tz=datetime.UTC).isoformat()
            obj.patch({"metadata": {"deletionTimestamp": stamp, "deletionGracePeriodSeconds": 30}})
            if linger is not None:
                asyncio.get_running_loop().call_later(linger, obj.delete)
        return EVICTION_ACCEPTED

    view << 201 << accept


def refuse_eviction(mock: km.KubernetesEmulator, namespace: str, name: str, budget: str = "web-pdb") -> None:
    """Answer every eviction of this pod with 429: its PodDisruptionBudget never allows it."""
    evictions(mock, namespace, name) << 429 << pdb_refusal(budget)

