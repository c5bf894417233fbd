"""Where the apps stage finds its controller-side files: the fetched kubeconfig, the Minio CA, dashboards.

- kubeconfig: where the k3s stage fetched it (`picluster.stages.k3s.kubeconfig_path`: $PICLUSTER_KUBECONFIG,
  the lab's state folder, else $XDG_CONFIG_HOME/picluster/kubeconfig-<cluster name>)
- the CA (`pki`) and the downloaded grafana.com dashboards (`dashboards`): $PICLUSTER_STATE_DIR/<kind>, else
  the lab's state folder/<kind>, else $XDG_CONFIG_HOME/picluster/<kind>-<cluster name>
"""

from __future__ import annotations

import os
from pathlib import Path

from picluster.inventory import Inventory

STATE_ENV = "PICLUSTER_STATE_DIR"


def kubeconfig_path(inv: Inventory) -> Path:
    """The kubeconfig the k3s stage fetched for this cluster."""
    from picluster.stages.k3s import kubeconfig_path as fetched_to

    return fetched_to(inv)


def _state_dir(inv: Inventory, kind: str) -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser() / kind
    if inv.lab is not None:
        return Path(inv.lab.state_dir) / kind
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / f"{kind}-{inv.cluster.name}"


def pki_dir(inv: Inventory) -> Path:
    """The locally generated CA and the Minio server certificate."""
    return _state_dir(inv, "pki")


def dashboards_dir(inv: Inventory) -> Path:
    """The grafana.com dashboards downloaded for this cluster (k8s/versions.yml `dashboards`)."""
    return _state_dir(inv, "dashboards")
