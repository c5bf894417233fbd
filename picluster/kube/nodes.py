"""Nodes through the API: list them with Ready status and roles, label them, cordon and uncordon."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from picluster.kube.client import Kube, KubeError, is_api_error, one_line

ROLE_PREFIX = "node-role.kubernetes.io/"
LEGACY_ROLE = "kubernetes.io/role"
SERVER_ROLES = frozenset({"control-plane", "master", "etcd"})
WORKER_LABELS: Mapping[str, str] = {
    LEGACY_ROLE: "worker",                     # what pi-cluster v1.4 sets (kubectl label ... kubernetes.io/role=worker)
    f"{ROLE_PREFIX}worker": "true",            # what `kubectl get nodes` shows in its ROLES column
}

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class NodeInfo:
    """What the API says about one node."""

    name: str
    ready: bool
    reason: str = ""                # why not Ready: the Ready condition's reason and message, or "no Ready condition"
    roles: tuple[str, ...] = ()
    unschedulable: bool = False
    kubelet_version: str = ""
    boot_id: str = ""               # changes when the node reboots
    internal_ip: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_server(self) -> bool:
        """A K3S server (control-plane, master or etcd role)."""
        return bool(SERVER_ROLES & set(self.roles))

    @property
    def status(self) -> str:
        """`Ready`, `NotReady`, with `,SchedulingDisabled` when cordoned, as kubectl prints it."""
        text = "Ready" if self.ready else "NotReady"
        return text + (",SchedulingDisabled" if self.unschedulable else "")


def roles_of(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The roles the labels give a node: every node-role.kubernetes.io/<role>, plus kubernetes.io/role."""
    roles = {key[len(ROLE_PREFIX):] for key in labels if key.startswith(ROLE_PREFIX) and key != ROLE_PREFIX}
    if labels.get(LEGACY_ROLE):
        roles.add(labels[LEGACY_ROLE])
    return tuple(sorted(roles))


def node_info(node: Any) -> NodeInfo:
    """A V1Node as NodeInfo."""
    meta = node.metadata
    labels = dict(meta.labels or {})
    status = node.status
    ready, reason = False, "no Ready condition reported yet"
    for cond in (status.conditions if status and status.conditions else []):
        if cond.type == "Ready":
            ready = cond.status == "True"
            reason = "" if ready else ": ".join(p for p in (cond.reason, cond.message) if p) or \
                f"Ready={cond.status}"
    ip = ""
    for addr in (status.addresses if status and status.addresses else []):
        if addr.type == "InternalIP":
            ip = addr.address
    info = status.node_info if status else None
    return NodeInfo(name=meta.name, ready=ready, reason=reason, roles=roles_of(labels),
                    unschedulable=bool(node.spec and node.spec.unschedulable),
                    kubelet_version=info.kubelet_version if info else "", boot_id=info.boot_id if info else "",
                    internal_ip=ip, labels=labels)


def list_nodes(kube: Kube) -> list[NodeInfo]:
    """Every node the API server knows, sorted by name."""
    try:
        with kube.core() as core:
            items = core.list_node(_request_timeout=kube.request_timeout).items
    except KubeError:
        raise
    except Exception as err:
        raise KubeError(f"cannot list nodes at {kube.where}: {one_line(err)}") from None
    return sorted((node_info(n) for n in items), key=lambda n: n.name)


def get_node(kube: Kube, name: str) -> NodeInfo:
    """One node; a KubeError says when the API does not know it."""
    try:
        with kube.core() as core:
            return node_info(core.read_node(name, _request_timeout=kube.request_timeout))
    except KubeError:
        raise
    except Exception as err:
        if is_api_error(err, 404):
            raise KubeError(f"node {name} is not registered with the API server at {kube.where}") from None
        raise KubeError(f"cannot read node {name}: {one_line(err)}") from None


def check_labels(labels: Mapping[str, str | None]) -> None:
    """Refuse label keys and values the API would reject, naming the bad one (None removes a label)."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))):
            raise KubeError(f"label key {key!r} is not valid: [prefix/]name, name ≤ 63 of [A-Za-z0-9-_.]")
        if value is not None and (not isinstance(value, str) or not _LABEL_VALUE.match(value)):
            raise KubeError(f"label {key}: value {value!r} is not valid: ≤ 63 of [A-Za-z0-9-_.], or empty")


def label(kube: Kube, node: str, labels: Mapping[str, str | None]) -> bool:
    """Set (or, with None, remove) labels on a node; patch only what differs; True when it changed."""
    check_labels(labels)
    current = get_node(kube, node).labels
    wanted = {k: v for k, v in labels.items() if current.get(k) != v}
    if not wanted:
        return False
    _patch(kube, node, {"metadata": {"labels": wanted}}, "label")
    return True


def cordon(kube: Kube, node: str) -> bool:
    """Mark a node unschedulable; True when it changed (False: it already was)."""
    if get_node(kube, node).unschedulable:
        return False
    _patch(kube, node, {"spec": {"unschedulable": True}}, "cordon")
    return True


def uncordon(kube: Kube, node: str) -> bool:
    """Make a node schedulable again; True when it changed (False: it already was)."""
    if not get_node(kube, node).unschedulable:
        return False
    _patch(kube, node, {"spec": {"unschedulable": None}}, "uncordon")
    return True


def _patch(kube: Kube, node: str, body: dict[str, Any], what: str) -> None:
    try:
        with kube.core() as core:
            core.patch_node(node, body, _request_timeout=kube.request_timeout)
    except KubeError:
        raise
    except Exception as err:
        raise KubeError(f"cannot {what} node {node}: {one_line(err)}") from None
