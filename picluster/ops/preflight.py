"""`cluster.shutdown`'s preflight: what it reads on each host, and whether graceful node shutdown would work.

On each K3S node: does the kubelet hold its "delay" inhibitor lock (`systemd-inhibit --list`), and is
logind's effective InhibitDelayMaxSec (read from the running logind) at least the kubelet's grace period?
"""

from __future__ import annotations

from picluster.facts import BOOT_ID, INHIBIT_DELAY, INHIBITORS, k3s_unit, kubelet_lock, parse_inhibitors, parse_usec
from picluster.inventory import Host
from picluster.kube.shutdown import shutdown_problems
from picluster.ops.status import Facts


def preflight_probes(host: Host) -> dict[str, str]:
    """What preflight reads on a host: its boot id; on a K3S node also the locks, logind's delay, K3S's state."""
    probes = {"boot_id": BOOT_ID}
    unit = k3s_unit(host.role)
    if unit:
        probes.update(inhibitors=INHIBITORS, delay=INHIBIT_DELAY, service=f"systemctl is-active {unit}")
    return probes


def graceful_problems(host: Host, facts: Facts) -> list[str]:
    """Why graceful node shutdown would not work on this K3S node ([] when it would, or not a K3S node)."""
    if not host.is_k3s or not facts.reachable:
        return []
    problems = []
    if kubelet_lock(parse_inhibitors(facts.text("inhibitors"))) is None:
        service = f"{k3s_unit(host.role)} is {facts.answer('service') or 'unknown'}"
        problems.append(f"no kubelet 'delay' inhibitor lock in `systemd-inhibit --list` ({service}): "
                        "the kubelet would not get to stop its pods; pods are killed at power-off")
    delay = parse_usec(facts.text("delay"))
    if delay is None:
        problems.append("logind's InhibitDelayMaxSec could not be read (is systemd-logind running?)")
    else:
        problems += shutdown_problems(host.settings.shutdown.grace, host.settings.shutdown.critical, delay)
    return [f"{host.name}: {p}" for p in problems]
