"""A kubeconfig fetched from a K3S server, with its server address pointed at the server's IP."""

from __future__ import annotations

from typing import Any

import yaml

from picluster.kube.client import KubeError


def rewrite_server(text: str, server_url: str, *, cluster: str | None = None) -> str:
    """The kubeconfig text with every cluster's (or the named one's) `server` set to server_url.

    K3S writes `https://127.0.0.1:6443`, which only works on the server itself.
    """
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise KubeError(f"the kubeconfig is not valid YAML: {str(err).splitlines()[0]}") from None
    clusters = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(clusters, list) or not clusters:
        raise KubeError("the kubeconfig has no clusters")
    changed = 0
    for entry in clusters:
        if not isinstance(entry, dict) or not isinstance(entry.get("cluster"), dict):
            raise KubeError("the kubeconfig has a cluster entry without `cluster:`")
        if cluster is None or entry.get("name") == cluster:
            entry["cluster"]["server"] = server_url
            changed += 1
    if not changed:
        raise KubeError(f"the kubeconfig has no cluster named {cluster!r}")
    return yaml.safe_dump(data, sort_keys=False)
