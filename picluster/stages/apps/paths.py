"""Where the apps stage keeps its controller-side files: the fetched kubeconfig, the Minio CA.

- state folder: $PICLUSTER_STATE_DIR, else the lab's state_dir (a lab inventory), else
  ~/.local/state/picluster/<cluster name>
- kubeconfig: $PICLUSTER_KUBECONFIG, else <state folder>/kubeconfig (the k3s stage fetches it there)
"""

from __future__ import annotations

import os
from pathlib import Path

from picluster.inventory import Inventory

STATE_ENV = "PICLUSTER_STATE_DIR"
KUBECONFIG_ENV = "PICLUSTER_KUBECONFIG"


def state_dir(inv: Inventory) -> Path:
    """The controller's folder for this cluster's generated files."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    if inv.lab is not None:
        return Path(inv.lab.state_dir)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "picluster" / inv.cluster.name


def kubeconfig_path(inv: Inventory) -> Path:
    """The kubeconfig the k3s stage fetched for this cluster."""
    if os.environ.get(KUBECONFIG_ENV):
        return Path(os.environ[KUBECONFIG_ENV]).expanduser()
    return state_dir(inv) / "kubeconfig"


def pki_dir(inv: Inventory) -> Path:
    """The locally generated CA and the Minio server certificate."""
    return state_dir(inv) / "pki"
