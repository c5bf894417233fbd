"""Drain a node through the Eviction API: honour PodDisruptionBudgets, retry with backoff, report what stays.

DaemonSet pods and mirror (static) pods are skipped, as `kubectl drain --ignore-daemonsets` does. A 429
answer (a PodDisruptionBudget would be violated) is retried with backoff until the timeout; evicted pods
are then waited for until they are gone. Pods that would not evict, or did not go, are reported with why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picluster.kube.client import Kube, KubeError, is_api_error, one_line, status_body, status_message
from picluster.kube.nodes import cordon

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True, order=True)
class PodRef:
    """One pod: namespace, name and uid (a new pod with the same name is a different pod)."""

    namespace: str
    name: str
    uid: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Backoff:
    """Delays between retries of a refused eviction: initial, times factor, capped at maximum (seconds)."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 10.0


@dataclass
class DrainReport:
    """What a drain did: pods evicted (and gone), skipped (and why), failed (and why)."""

    node: str
    evicted: list[PodRef] = field(default_factory=list)
    skipped: list[tuple[PodRef, str]] = field(default_factory=list)
    failed: list[tuple[PodRef, str]] = field(default_factory=list)
    attempts: dict[PodRef, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every pod that had to go is gone."""
        return not self.failed

    def summary(self) -> str:
        """One line: counts, then each pod that would not go and why."""
        text = (f"{self.node}: {len(self.evicted)} pods evicted, {len(self.skipped)} skipped, "
                f"{len(self.failed)} not evicted ({self.seconds:.1f}s)")
        if self.failed:
            text += ": " + "; ".join(f"{ref}: {why}" for ref, why in self.failed)
        return text


def skip_reason(pod: Any) -> str | None:
    """Why a drain leaves this pod alone (DaemonSet or mirror pod), or None when it must be evicted."""
    meta = pod.metadata
    if MIRROR_ANNOTATION in (meta.annotations or {}):
        return "mirror (static) pod: the kubelet runs it from a file and would restart it"
    for owner in meta.owner_references or []:
        if owner.controller and owner.kind == "DaemonSet":
            return f"DaemonSet pod ({owner.name}): it runs on every node and stops with the node"
    return None


def is_unmanaged(pod: Any) -> bool:
    """True when no controller owns the pod: once evicted, nothing recreates it."""
    return not any(owner.controller for owner in pod.metadata.owner_references or [])


def pod_ref(pod: Any) -> PodRef:
    """A V1Pod as a PodRef."""
    return PodRef(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid or "")


def pods_on_node(kube: Kube, node: str) -> list[Any]:
    """Every pod scheduled on a node (V1Pod), across namespaces."""
    try:
        with kube.core() as core:
            items = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}",
                                                     _request_timeout=kube.request_timeout).items
    except KubeError:
        raise
    except Exception as err:
        raise KubeError(f"cannot list the pods on {node}: {one_line(err)}") from None
    return [p for p in items if p.spec and p.spec.node_name == node]


def drain(
    kube: Kube,
    node: str,
    timeout: float,
    *,
    force: bool = False,
    grace_period: int | None = None,
    backoff: Backoff = Backoff(),
    poll: float = 1.0,
    cordon_first: bool = True,
) -> DrainReport:
    """Cordon a node, then evict its pods; return the report (check `.ok`) within `timeout` seconds.

    `force` also evicts pods no controller owns (they are gone for good); without it such pods are
    reported and left running, as `kubectl drain` does. `grace_period` overrides the pods' own.
    """
    start = time.monotonic()
    deadline = start + timeout
    report = DrainReport(node)
    if cordon_first:
        cordon(kube, node)
    pending: dict[PodRef, _Retry] = {}
    terminating: list[PodRef] = []
    for pod in pods_on_node(kube, node):
        ref = pod_ref(pod)
        reason = skip_reason(pod)
        if reason:
            report.skipped.append((ref, reason))
        elif pod.metadata.deletion_timestamp:
            terminating.append(ref)
        elif is_unmanaged(pod) and not force:
            report.failed.append((ref, "no controller owns it, so evicting it would lose it for good; "
                                       "delete it yourself or drain with force"))
        else:
            pending[ref] = _Retry(delay=backoff.initial)

    with kube.core() as core:
        while pending:
            now = time.monotonic()
            for ref, retry in sorted(pending.items()):
                if retry.at > now:
                    continue
                report.attempts[ref] = report.attempts.get(ref, 0) + 1
                outcome, why, after = _evict(core, ref, grace_period, kube.request_timeout)
                if outcome == "evicted":
                    terminating.append(ref)
                    del pending[ref]
                elif outcome == "gone":
                    report.evicted.append(ref)
                    del pending[ref]
                elif outcome == "retry":
                    retry.why = why
                    retry.at = time.monotonic() + max(retry.delay, min(after, backoff.maximum))
                    retry.delay = min(retry.delay * backoff.factor, backoff.maximum)
                else:
                    report.failed.append((ref, why))
                    del pending[ref]
            if not pending:
                break
            now = time.monotonic()
            if now >= deadline:
                break
            next_at = min(r.at for r in pending.values())
            time.sleep(max(0.0, min(next_at, deadline) - now))

    for ref, retry in sorted(pending.items()):
        report.failed.append((ref, f"{retry.why}; still refused after {report.attempts.get(ref, 0)} attempts "
                                   f"in {timeout:g}s"))
    left = wait_pods_gone(kube, terminating, max(0.0, deadline - time.monotonic()), poll=poll)
    for ref in terminating:
        if ref in left:
            report.failed.append((ref, f"evicted but still terminating after {timeout:g}s; look at "
                                       f"`kubectl -n {ref.namespace} describe pod {ref.name}` (finalizers, "
                                       "a stuck preStop hook, or its node's kubelet)"))
        else:
            report.evicted.append(ref)
    report.seconds = time.monotonic() - start
    return report


def wait_pods_gone(kube: Kube, pods: Iterable[PodRef], timeout: float, *, poll: float = 1.0) -> list[PodRef]:
    """Wait until each pod is deleted (or replaced by a new one of the same name); return those left."""
    left = list(pods)
    deadline = time.monotonic() + timeout
    if not left:
        return []
    with kube.core() as core:
        while True:
            left = [ref for ref in left if not _gone(core, ref, kube.request_timeout)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))


@dataclass
class _Retry:
    delay: float
    at: float = 0.0
    why: str = ""


def _gone(core: CoreV1Api, ref: PodRef, timeout: float) -> bool:
    try:
        pod = core.read_namespaced_pod(ref.name, ref.namespace, _request_timeout=timeout)
    except Exception as err:
        if is_api_error(err, 404):
            return True
        return False  # the API did not answer: not known to be gone; asked again on the next poll
    return bool(ref.uid) and pod.metadata is not None and pod.metadata.uid != ref.uid


def _evict(core: CoreV1Api, ref: PodRef, grace: int | None, timeout: float) -> tuple[str, str, float]:
    """POST one Eviction: ("evicted"|"gone"|"retry"|"failed", why, retry-after seconds)."""
    from kubernetes.client import V1DeleteOptions, V1Eviction, V1ObjectMeta

    body = V1Eviction(api_version="policy/v1", kind="Eviction",
                      metadata=V1ObjectMeta(name=ref.name, namespace=ref.namespace),
                      delete_options=V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None)
    try:
        core.create_namespaced_pod_eviction(ref.name, ref.namespace, body, _request_timeout=timeout)
    except Exception as err:
        if is_api_error(err, 404):
            return "gone", "", 0.0
        if is_api_error(err, 429):
            return "retry", _why_429(err), _retry_after(err)
        if is_api_error(err):
            return "failed", f"eviction refused: {one_line(err)}", 0.0
        return "retry", f"the API server did not answer: {one_line(err)}", 0.0
    return "evicted", "", 0.0


def _why_429(err: Exception) -> str:
    message = status_message(err)
    details = status_body(err).get("details") or {}
    causes = details.get("causes") if isinstance(details, dict) else None
    budget = any(isinstance(c, dict) and c.get("reason") == "DisruptionBudget" for c in causes or []) \
        or "disruption budget" in message.lower()
    if budget:
        return f"blocked by a PodDisruptionBudget: {message}"
    return f"the API server asked to retry later (429): {message or 'Too Many Requests'}"


def _retry_after(err: Exception) -> float:
    headers = getattr(err, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        details = status_body(err).get("details") or {}
        value = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
