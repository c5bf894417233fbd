"""`cluster.reset`: K3S uninstalled from every node and what the reference's k3s_reset.yml cleans, cleaned.

On each K3S node (servers and agents, all at once): the official uninstall script (k3s-uninstall.sh on servers,
k3s-agent-uninstall.sh on agents), then the pods' and containers' logs, fluent-bit's database folder and its
position files (*.pos under /var/log); on the agents the iSCSI discovery records of every portal but the
gateway's, and with `wipe_storage` everything under /storage (Longhorn's data). Each step reads what is there
and removes only that, so a second run changes nothing; `cluster.up` afterwards builds the cluster again.
"""

from __future__ import annotations

from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep
from picluster.remote.phases import HostPhase, Phase, RunOptions
from picluster.stages import Stage
from picluster.state.cleanup import FolderEmptied, IscsiDiscoveryCleaned, PathsAbsent
from picluster.state.k3s_service import K3sUninstalled

LOGS = ("/var/log/pods", "/var/log/containers", "/var/log/fluentbit")
STORAGE = "/storage"


def clean_steps(host: Host, *, gateway_ip: str | None, wipe_storage: bool) -> list[AnyStep]:
    """What the reset cleans on one node after the uninstall."""
    steps: list[AnyStep] = [PathsAbsent("pod logs and fluent-bit state", LOGS, under="/var/log", pattern="*.pos")]
    if host.role == "agent":
        steps.append(IscsiDiscoveryCleaned([gateway_ip] if gateway_ip else []))
        if wipe_storage:
            steps.append(FolderEmptied(STORAGE))
    return steps


def reset_plan(inv: Inventory, *, wipe_storage: bool) -> HostPhase[Host]:
    """The host phase: uninstall, then clean."""
    gateway = inv.gateway
    gateway_ip = str(gateway.ip) if gateway is not None else None

    def plan(host: Host) -> list[AnyStep]:
        return [K3sUninstalled(), *clean_steps(host, gateway_ip=gateway_ip, wipe_storage=wipe_storage)]

    return HostPhase("reset", plan)


def reset_stage(*, wipe_storage: bool) -> Stage:
    """The `cluster.reset` stage; its checks are the os stage's (what the reset leaves must still hold)."""
    def phases(inv: Inventory, options: RunOptions) -> list[Phase]:
        return [reset_plan(inv, wipe_storage=wipe_storage)]

    return Stage("reset", ("server", "agent"), "K3S uninstalled, its logs and state cleaned", phases, gate="os")


def what_it_does(hosts: list[Host], *, wipe_storage: bool) -> list[str]:
    """The lines the confirmation names: per host, what goes."""
    lines = []
    for h in hosts:
        parts = ["uninstall K3S", "delete " + ", ".join(LOGS) + " and /var/log/**/*.pos"]
        if h.role == "agent":
            parts.append("delete iSCSI discovery records but the gateway's")
            if wipe_storage:
                parts.append(f"DELETE EVERYTHING UNDER {STORAGE}")
        lines.append(f"{h.name} ({h.role}): {'; '.join(parts)}")
    return lines
