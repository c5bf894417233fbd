"""Where the apps stage finds its controller-side files: the fetched kubeconfig, the Minio CA.

- kubeconfig: where the k3s stage fetched it (`picluster.stages.k3s.kubeconfig_path`: $PICLUSTER_KUBECONFIG,
  the lab's state folder, else $XDG_CONFIG_HOME/picluster/kubeconfig-<cluster name>)
- the CA: $PICLUSTER_STATE_DIR/pki, else the lab's state folder /pki, else
  $XDG_CONFIG_HOME/picluster/pki-<cluster name>
"""

from __future__ import annotations

import os
from pathlib import Path

from picluster.inventory import Inventory

STATE_ENV = "PICLUSTER_STATE_DIR"
KUBECONFIG_ENV = "PICLUSTER_KUBECONFIG"


def kubeconfig_path(inv: Inventory) -> Path:
    """The kubeconfig the k3s stage fetched for this cluster."""
    from picluster.stages.k3s import kubeconfig_path as fetched_to

    return fetched_to(inv)


def pki_dir(inv: Inventory) -> Path:
    """The locally generated CA and the Minio server certificate."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser() / "pki"
    if inv.lab is not None:
        return Path(inv.lab.state_dir) / "pki"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / f"pki-{inv.cluster.name}"
