"""The Kubernetes side: the official client for nodes, readiness waits, cordon and eviction-based drain.

One idea per module: `client` (a kubeconfig to an API client), `nodes` (list, label, cordon), `wait`
(nodes Ready), `drain` (evict a node's pods), `workloads` (startup waits), `rolling` (servers then agents,
one node at a time), `shutdown` (graceful-shutdown settings that work together), `kubeconfig` (rewrite the
server address). Nothing here imports `kubernetes` or `rich` at module level, so `invoke --list` stays fast.
"""

from __future__ import annotations

from picluster.kube.client import Kube, KubeError

__all__ = ["Kube", "KubeError"]
