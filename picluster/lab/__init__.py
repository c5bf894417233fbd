"""The local rehearsal lab: systemd-nspawn nodes with real systemd and sshd, on a private bridge.

`from picluster.lab import Lab, LabError`. The heavy parts load on first use, so the per-node
supervisor (`python -m picluster.lab.supervisor`) imports nothing but the standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "LabError", "NodeStatus"]


def __getattr__(name: str) -> Any:
    if name in ("Lab", "NodeStatus"):
        from picluster.lab import lab

        return getattr(lab, name)
    if name == "LabError":
        from picluster.lab.common import LabError

        return LabError
    raise AttributeError(name)
