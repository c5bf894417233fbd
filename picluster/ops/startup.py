"""`cluster.startup`: after the power comes back, wait for the gateway, then the servers, then the agents.

Each group is waited for (bounded) until its hosts answer SSH and systemd has finished booting; on K3S
nodes the K3S service must be active. Then, through the API: the nodes Ready, the nodes `cluster.shutdown`
cordoned uncordoned (only those: a node someone else cordoned is reported and left alone), and the
workloads ready. Without a Kubernetes API these steps are skipped with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from picluster.facts import k3s_unit
from picluster.inventory import Host
from picluster.kube import Kube, KubeError
from picluster.ops.shutdown import SHUTDOWN_LABEL, SHUTDOWN_LABEL_VALUE
from picluster.ops.status import read_facts
from picluster.ops.timeline import Timeline

BOOTED = ("running", "degraded")
BOOT_WAIT_S = 600.0


def order(hosts: Sequence[Host]) -> list[tuple[str, list[Host]]]:
    """The startup order: the gateway (DNS, DHCP, NTP for the others), then the servers, then the agents."""
    out = [("gateway", [h for h in hosts if h.role == "gateway"]),
           ("servers", [h for h in hosts if h.role == "server"]),
           ("agents", [h for h in hosts if h.role == "agent"])]
    return [(name, members) for name, members in out if members]


def boot_probes(host: Host) -> dict[str, str]:
    """What tells a host is up: systemd's state; on a K3S node also whether K3S is installed and active."""
    probes = {"system": "systemctl is-system-running"}
    unit = k3s_unit(host.role)
    if unit:
        probes["k3s_installed"] = f"systemctl cat {unit} >/dev/null 2>&1 && echo yes"
        probes["service"] = f"systemctl is-active {unit}"
    return probes


def booted(host: Host, outputs: dict[str, Any]) -> str | None:
    """None when the host is up for the cluster; else what it is still waiting for (pure)."""
    system = outputs["system"].stdout.strip()
    if system not in BOOTED:
        return f"systemd is {system or 'not answering'}"
    unit = k3s_unit(host.role)
    if unit and outputs["k3s_installed"].stdout.strip() == "yes":
        service = outputs["service"].stdout.strip()
        if service != "active":
            return f"{unit} is {service}"
    return None


@dataclass
class StartupRun:
    timeline: Timeline
    up: dict[str, float] = field(default_factory=dict)       # host -> seconds until it was up
    waiting: dict[str, str] = field(default_factory=dict)    # host -> what it still waited for at the timeout
    notes: list[str] = field(default_factory=list)
    uncordoned: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "error": self.error, "up": {k: round(v, 3) for k, v in self.up.items()},
                "waiting": self.waiting, "uncordoned": self.uncordoned, "notes": self.notes,
                "timeline": [e.to_dict() for e in self.timeline.events]}


def wait_up(host: Host, deadline: float, poll: float = 2.0) -> str | None:
    """Wait until `host` is up for the cluster (see `booted`); None, or what it still waited for."""
    from picluster.remote.reboot import quiet_ssh_errors

    why: str | None = "no SSH answer"
    with quiet_ssh_errors():
        while True:
            facts = read_facts(host, boot_probes(host), timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            why = f"no SSH answer ({facts.error})" if not facts.reachable else booted(host, dict(facts.outputs))
            if why is None or time.monotonic() >= deadline:
                return why
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def uncordon_ours(kube: Kube, names: Sequence[str], run: StartupRun) -> None:
    """Uncordon the nodes `cluster.shutdown` cordoned; report any other cordoned node and leave it."""
    from picluster.kube.nodes import label, list_nodes, uncordon

    for node in list_nodes(kube):
        if node.name not in names:
            continue
        ours = node.labels.get(SHUTDOWN_LABEL) == SHUTDOWN_LABEL_VALUE
        if ours:
            uncordon(kube, node.name)
            label(kube, node.name, {SHUTDOWN_LABEL: None})
            run.uncordoned.append(node.name)
            run.timeline.add(node.name, "uncordoned")
        elif node.unschedulable:
            run.notes.append(f"{node.name} is cordoned, not by cluster.shutdown: left as it is "
                             f"(`kubectl uncordon {node.name}` when it should take pods again)")


def _wait_group(run: StartupRun, name: str, members: Sequence[Host], wait: Callable[[Host, float], str | None],
                timeout: float) -> dict[str, str]:
    """Wait for every member at once (bounded by `timeout`); return what each late one still waited for."""
    tl = run.timeline
    tl.add(name, "waiting", ", ".join(h.name for h in members))
    deadline = time.monotonic() + timeout

    def one(h: Host) -> str | None:
        why = wait(h, deadline)
        if why is None:
            run.up[h.name] = tl.add(h.name, "up").at
        return why

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        results = list(pool.map(one, members))
    late = {h.name: why for h, why in zip(members, results, strict=True) if why is not None}
    if not late:
        tl.add(name, "up")
    return late


def _wait_groups(run: StartupRun, hosts: Sequence[Host], wait: Callable[[Host, float], str | None], timeout: float,
                 on_group: Callable[[str, list[str]], None] | None) -> bool:
    """Gateway, servers, agents, each waited for before the next; False (and why) at the first group late."""
    groups = order(hosts)
    for name, members in groups:
        if on_group is not None:
            on_group(name, [h.name for h in members])
        late = _wait_group(run, name, members, wait, timeout)
        if not late:
            continue
        run.waiting.update(late)
        for host, why in late.items():
            run.timeline.add(host, "not up", why)
        later = [h.name for n, m in groups for h in m if n != name and h.name not in run.up and h.name not in late]
        run.error = (f"{', '.join(late)} not up after {timeout:g}s ("
                     + "; ".join(f"{k}: {v}" for k, v in late.items()) + ")"
                     + (f"; not waited for: {', '.join(later)}" if later else "")
                     + "; look at the host's console or `journalctl -b` on it")
        return False
    return True


def _cluster_ready(run: StartupRun, kube: Kube, hosts: Sequence[Host], *, ready_timeout: float,
                   workloads_timeout: float, poll: float, progress: bool) -> None:
    """Through the API: the K3S nodes Ready, what shutdown cordoned uncordoned, the workloads ready."""
    from picluster.kube.nodes import list_nodes
    from picluster.kube.wait import wait_ready
    from picluster.kube.workloads import workloads_ready

    tl = run.timeline
    k3s = [h.name for h in hosts if h.is_k3s]
    try:
        known = {n.name for n in list_nodes(kube)}
        missing = [n for n in k3s if n not in known]
        if missing:
            run.notes.append(f"{', '.join(missing)} not registered with the API server: not waited for")
        names = [n for n in k3s if n in known]
        tl.add("cluster", "waiting for nodes Ready", ", ".join(names))
        wait_ready(kube, names, ready_timeout, servers=[h.name for h in hosts if h.role == "server"],
                   interval=poll, progress=progress)
        tl.add("cluster", "nodes Ready")
        uncordon_ours(kube, names, run)
        tl.add("cluster", "waiting for workloads")
        found = workloads_ready(kube, None, workloads_timeout, interval=poll, progress=progress)
        tl.add("cluster", "workloads ready", f"{len(found)} workloads")
    except KubeError as err:
        run.error = str(err)


def startup(
    hosts: Sequence[Host],
    *,
    kube_factory: Callable[[], tuple[Kube | None, str]] | None = None,
    timeout: float = BOOT_WAIT_S,
    ready_timeout: float = 300.0,
    workloads_timeout: float = 600.0,
    on_event: Callable[[Any], None] | None = None,
    on_group: Callable[[str, list[str]], None] | None = None,
    progress: bool = True,
    poll: float = 2.0,
    waiter: Callable[[Host, float], str | None] | None = None,
) -> StartupRun:
    """Wait for gateway → servers → agents, then (with an API) nodes Ready, uncordon, workloads ready.

    `kube_factory()` opens the API once the hosts are up (it cannot answer before): (Kube, "") or (None, why).
    """
    run = StartupRun(Timeline(on_event))
    wait = waiter or (lambda h, deadline: wait_up(h, deadline, poll))
    if _wait_groups(run, hosts, wait, timeout, on_group) and any(h.is_k3s for h in hosts):
        kube, kube_note = kube_factory() if kube_factory is not None else (None, "")
        if kube is None:
            run.notes.append(f"nodes Ready, uncordon and workloads ready skipped: {kube_note or 'no Kubernetes API'}")
        else:
            _cluster_ready(run, kube, hosts, ready_timeout=ready_timeout, workloads_timeout=workloads_timeout,
                           poll=poll, progress=progress)
    run.timeline.add("cluster", "done")
    return run
