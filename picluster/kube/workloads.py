"""Startup waits: Deployments, StatefulSets and DaemonSets in some namespaces all ready."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from picluster.kube.client import Kube, KubeError, one_line
from picluster.kube.progress import waiting

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Workload:
    """One controller and how many of its pods are ready against how many it wants."""

    kind: str
    namespace: str
    name: str
    ready: int
    desired: int
    settled: bool = True     # the controller has seen its latest spec and rolled it out

    @property
    def ok(self) -> bool:
        """Every wanted pod is ready and the rollout is complete."""
        return self.settled and self.ready >= self.desired

    def __str__(self) -> str:
        extra = "" if self.settled else ", rollout in progress"
        return f"{self.kind} {self.namespace}/{self.name} {self.ready}/{self.desired} ready{extra}"


class WorkloadsNotReady(KubeError):
    """Workloads were not ready in time; `waiting` lists them."""

    def __init__(self, message: str, waiting: list[Workload]) -> None:
        super().__init__(message)
        self.waiting = waiting


def _observed(obj: Any) -> bool:
    generation = obj.metadata.generation
    observed = obj.status.observed_generation if obj.status else None
    return generation is None or (observed is not None and observed >= generation)


def deployment(obj: Any) -> Workload:
    """A V1Deployment as a Workload (ready = available replicas, all updated)."""
    s = obj.status
    desired = obj.spec.replicas if obj.spec and obj.spec.replicas is not None else 1
    updated = (s.updated_replicas or 0) if s else 0
    return Workload("Deployment", obj.metadata.namespace, obj.metadata.name,
                    (s.available_replicas or 0) if s else 0, desired, _observed(obj) and updated >= desired)


def statefulset(obj: Any) -> Workload:
    """A V1StatefulSet as a Workload."""
    s = obj.status
    desired = obj.spec.replicas if obj.spec and obj.spec.replicas is not None else 1
    return Workload("StatefulSet", obj.metadata.namespace, obj.metadata.name,
                    (s.ready_replicas or 0) if s else 0, desired, _observed(obj))


def daemonset(obj: Any) -> Workload:
    """A V1DaemonSet as a Workload (one pod per eligible node)."""
    s = obj.status
    desired = s.desired_number_scheduled if s else 0
    updated = (s.updated_number_scheduled or 0) if s else 0
    return Workload("DaemonSet", obj.metadata.namespace, obj.metadata.name,
                    (s.number_available or 0) if s else 0, desired, _observed(obj) and updated >= desired)


def workloads(kube: Kube, namespaces: Iterable[str] | None = None) -> list[Workload]:
    """Every Deployment, StatefulSet and DaemonSet in the namespaces (None: all namespaces)."""
    found: list[Workload] = []
    try:
        with kube.apps() as apps:
            t = kube.request_timeout
            if namespaces is None:
                found += [deployment(o) for o in apps.list_deployment_for_all_namespaces(_request_timeout=t).items]
                found += [statefulset(o) for o in apps.list_stateful_set_for_all_namespaces(_request_timeout=t).items]
                found += [daemonset(o) for o in apps.list_daemon_set_for_all_namespaces(_request_timeout=t).items]
            else:
                for ns in namespaces:
                    found += [deployment(o) for o in apps.list_namespaced_deployment(ns, _request_timeout=t).items]
                    found += [statefulset(o) for o in apps.list_namespaced_stateful_set(ns, _request_timeout=t).items]
                    found += [daemonset(o) for o in apps.list_namespaced_daemon_set(ns, _request_timeout=t).items]
    except KubeError:
        raise
    except Exception as err:
        raise KubeError(f"cannot list workloads at {kube.where}: {one_line(err)}") from None
    return found


def workloads_ready(
    kube: Kube,
    namespaces: Iterable[str] | None,
    timeout: float = 600.0,
    *,
    interval: float = 2.0,
    console: Console | None = None,
    progress: bool = True,
) -> list[Workload]:
    """Wait until every workload in the namespaces is ready; return them, or raise WorkloadsNotReady."""
    spaces = list(namespaces) if namespaces is not None else None
    deadline = time.monotonic() + timeout
    found: list[Workload] = []
    last_error = ""
    waiting_now: list[Workload] = []
    with waiting("workloads ready", console=console, enabled=progress) as update:
        while True:
            try:
                found = workloads(kube, spaces)
                last_error = ""
            except KubeError as err:
                last_error = str(err)
            waiting_now = [w for w in found if not w.ok]
            update(len(found) - len(waiting_now), len(found), [f"{w.namespace}/{w.name}" for w in waiting_now])
            if not last_error and not waiting_now:
                return found
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    where = "all namespaces" if spaces is None else ", ".join(spaces)
    message = f"workloads in {where} not ready after {timeout:g}s: " + "; ".join(str(w) for w in waiting_now)
    if last_error:
        message += f"; the API server did not answer at the end: {last_error}"
    message += "; look at `kubectl -n <namespace> get pods` and `kubectl -n <namespace> describe pod <pod>`"
    raise WorkloadsNotReady(message, waiting_now)
