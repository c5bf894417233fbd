"""`cluster.shutdown`: graceful, ordered power-off — agents, then servers, then the gateway — with a timeline.

1. Preflight, on every selected host in parallel over SSH: is it reachable (unreachable hosts are reported
   and skipped); on each K3S node, would graceful node shutdown work (`picluster.ops.preflight`)? Where it
   would not, say so and refuse without `force`.
2. Cordon and drain the agents through the Eviction API (PodDisruptionBudgets honoured, bounded), when
   the API answers; otherwise say why and rely on the kubelet's graceful shutdown alone.
3. Power off each group in parallel (`systemctl poweroff`, which goes through logind and so waits for the
   kubelet's delay lock) and wait, bounded, until every host of the group is down before the next group
   (`picluster.ops.power` says how "down" is observed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from picluster.inventory import Host, Inventory
from picluster.kube import Kube, KubeError
from picluster.ops.power import (
    POLL_S,
    PowerObserver,
    Waiting,
    down_timeout,
    issue_poweroff,
    port_state,
    power_off_group,
)
from picluster.ops.preflight import graceful_problems, preflight_probes
from picluster.ops.status import Facts, read_all
from picluster.ops.timeline import Event, Timeline, event_line

# Re-exported: the task layer, the rolling reboot and the benchmarks take these from here.
__all__ = ["SHUTDOWN_LABEL", "SHUTDOWN_LABEL_VALUE", "Event", "PowerObserver", "ShutdownRun", "Timeline",
           "drain_agents", "event_line", "groups", "issue_poweroff", "port_state", "print_shutdown", "shutdown"]

SHUTDOWN_LABEL = "picluster.io/cordoned-for"      # set on nodes this tool cordoned; startup uncordons them
SHUTDOWN_LABEL_VALUE = "shutdown"

Reader = Callable[[Sequence[Host]], Mapping[str, Facts]]


def groups(hosts: Sequence[Host], *, keep_gateway: bool = False) -> list[tuple[str, list[Host]]]:
    """The power-off order: every agent (together), then the servers, then the gateway (unless kept)."""
    order = [("agents", [h for h in hosts if h.role == "agent"]),
             ("servers", [h for h in hosts if h.role == "server"])]
    if not keep_gateway:
        order.append(("gateway", [h for h in hosts if h.role == "gateway"]))
    return [(name, members) for name, members in order if members]


@dataclass
class ShutdownRun:
    """What happened: per host the outcome, the notes and refusals, and the timeline."""

    timeline: Timeline
    outcome: dict[str, str] = field(default_factory=dict)   # host -> down | unreachable | still up | failed | kept
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)       # graceful shutdown would not work
    notes: list[str] = field(default_factory=list)
    refused: str = ""                                       # why nothing was powered off
    stopped: str = ""                                       # why the run stopped part-way
    drain: list[str] = field(default_factory=list)          # one summary line per drained node

    @property
    def failed(self) -> bool:
        return bool(self.refused or self.stopped)

    @property
    def seconds(self) -> float:
        return self.timeline.events[-1].at if self.timeline.events else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "refused": self.refused, "stopped": self.stopped,
                "outcome": self.outcome, "unreachable": self.unreachable, "problems": self.problems,
                "notes": self.notes, "drain": self.drain, "seconds": round(self.seconds, 3),
                "timeline": [e.to_dict() for e in self.timeline.events]}


# --- cordon and drain ------------------------------------------------------------------------------------


def _cordon_all(kube: Kube, names: Sequence[str], run: ShutdownRun) -> bool:
    """Label and cordon each node, one after the other; False at the first the API refuses."""
    from picluster.kube.nodes import cordon, label

    for name in names:
        try:
            label(kube, name, {SHUTDOWN_LABEL: SHUTDOWN_LABEL_VALUE})
            cordon(kube, name)
        except KubeError as err:
            run.drain.append(f"{name}: cordon failed: {err}")
            run.timeline.add(name, "cordon failed", str(err))
            return False
        run.timeline.add(name, "cordoned")
    return True


def _drain_one(kube: Kube, name: str, timeout: float, run: ShutdownRun, poll: float) -> bool:
    """Drain one cordoned node; True when every pod that had to go is gone."""
    from picluster.kube.drain import Backoff, drain

    tl = run.timeline
    tl.add(name, "drain started")
    try:
        report = drain(kube, name, timeout, poll=poll, cordon_first=False,
                       backoff=Backoff(initial=min(1.0, poll), maximum=max(poll, 10.0)))
    except KubeError as err:
        run.drain.append(f"{name}: drain failed: {err}")
        tl.add(name, "drain failed", str(err))
        return False
    run.drain.append(report.summary())
    tl.add(name, "drained" if report.ok else "drain incomplete", report.summary())
    return report.ok


def drain_agents(kube: Kube, agents: Sequence[Host], timeout: float, run: ShutdownRun, *,
                 poll: float = 1.0) -> bool:
    """Cordon every agent first (so pods do not hop between them), then drain them in parallel; True if all
    pods that had to go are gone. Nodes the API does not know are noted and skipped."""
    from picluster.kube.nodes import list_nodes

    try:
        known = {n.name for n in list_nodes(kube)}
    except KubeError as err:
        run.notes.append(f"cordon and drain skipped: {err}")
        return True
    names = [h.name for h in agents if h.name in known]
    run.notes += [f"{h.name}: not registered with the API server: not cordoned or drained"
                  for h in agents if h.name not in known]
    if not _cordon_all(kube, names, run):
        return False
    if not names:
        return True
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(lambda name: _drain_one(kube, name, timeout, run, poll), names))
    return all(results)


# --- the phases ------------------------------------------------------------------------------------------


def _preflight(run: ShutdownRun, targets: Sequence[Host], read: Reader, force: bool) -> bool:
    """Read every target, note the unreachable ones and the problems; False (and why) when it refuses."""
    tl = run.timeline
    tl.add("cluster", "preflight started", ", ".join(h.name for h in targets))
    facts = read(targets)
    for h in targets:
        f = facts[h.name]
        if not f.reachable:
            run.unreachable[h.name] = f.error
            run.outcome[h.name] = "unreachable"
            tl.add(h.name, "unreachable", f.error)
        run.problems += graceful_problems(h, f)
    tl.add("cluster", "preflight done", f"{len(targets) - len(run.unreachable)} of {len(targets)} reachable")
    if run.problems and not force:
        run.refused = ("graceful node shutdown would not work on "
                       f"{', '.join(sorted({p.split(':')[0] for p in run.problems}))}; nothing was powered off "
                       "(fix it, or power off anyway with --force)")
        return False
    if run.problems:
        run.notes.append("graceful node shutdown would not work (see the problems); going ahead: --force")
    return True


def _drain_phase(run: ShutdownRun, agents: Sequence[Host], kube: Kube | None, kube_note: str, *, drain: bool,
                 force: bool, timeout: float, poll: float) -> bool:
    """Cordon and drain the agents when asked and the API is there; False (and why) when the run stops."""
    if not drain:
        run.notes.append("cordon and drain skipped (--no-drain): the kubelets' graceful shutdown alone stops pods")
        return True
    if kube is None:
        run.notes.append(f"cordon and drain skipped: {kube_note or 'no Kubernetes API'}; "
                         "the kubelets' graceful shutdown alone stops pods")
        return True
    if not agents:
        return True
    run.timeline.add("agents", "drain started")
    drained = drain_agents(kube, agents, timeout, run, poll=poll)
    run.timeline.add("agents", "drain done", "complete" if drained else "incomplete")
    if drained or force:
        return True
    run.stopped = ("the drain did not finish (see the drain lines); nothing was powered off and the agents "
                   "stay cordoned (`invoke cluster.startup` uncordons them); fix what blocks it, or power "
                   "off anyway with --force or --no-drain")
    return False


def _power_off_groups(run: ShutdownRun, order: Sequence[tuple[str, list[Host]]], observer: PowerObserver, *,
                      force: bool, timeout: float | None, waiting: Waiting | None,
                      poweroff: Callable[[Host], str], poll: float) -> None:
    """Each group in turn, waited for; a host not down stops the groups after it, unless `force`."""
    for index, (name, members) in enumerate(order):
        left = power_off_group(name, members, run.timeline, run.outcome, observer,
                               timeout if timeout is not None else down_timeout(members),
                               waiting=waiting, poweroff=poweroff, poll=poll)
        if not left:
            continue
        rest = [h.name for _, m in order[index + 1:] for h in m]
        if rest and not force:
            run.stopped = (f"{', '.join(left)} not down: {', '.join(rest)} left running so the order holds "
                           "(look at the host's console; --force goes on regardless)")
            run.outcome.update(dict.fromkeys(rest, "left running"))
            return
        run.notes.append(f"{', '.join(left)} not down; going on (--force)" if rest else f"{', '.join(left)} not down")


def shutdown(
    inv: Inventory,
    hosts: Sequence[Host],
    *,
    kube: Kube | None = None,
    kube_note: str = "",
    drain: bool = True,
    force: bool = False,
    keep_gateway: bool = False,
    drain_timeout: float = 300.0,
    drain_poll: float = 1.0,
    timeout: float | None = None,
    observer: PowerObserver | None = None,
    on_event: Callable[[Event], None] | None = None,
    waiting: Waiting | None = None,
    parallel: int = 10,
    poweroff: Callable[[Host], str] = issue_poweroff,
    read: Reader | None = None,
    poll: float = POLL_S,
) -> ShutdownRun:
    """Preflight, drain the agents, then power off agents → servers → gateway, each group waited for.

    `kube` is the cluster's API (None: no cordon or drain, and `kube_note` says why). Refuses (nothing is
    changed) when graceful node shutdown would not work on a K3S node, unless `force`; stops before the
    next group when a host of this group is not down in time, unless `force`. `observer` says when a host
    is down (default: its SSH port silent; see `picluster.ops.power`).
    """
    run = ShutdownRun(Timeline(on_event))
    order = groups(hosts, keep_gateway=keep_gateway)
    for h in hosts:
        run.outcome[h.name] = "kept" if keep_gateway and h.role == "gateway" else "not started"
    targets = [h for _, members in order for h in members]
    if not _preflight(run, targets, read or (lambda hs: read_all(hs, preflight_probes, parallel=parallel)), force):
        return run
    order = [(name, kept) for name, members in order
             if (kept := [h for h in members if h.name not in run.unreachable])]
    agents = next((members for name, members in order if name == "agents"), [])
    if not _drain_phase(run, agents, kube, kube_note, drain=drain, force=force, timeout=drain_timeout,
                        poll=drain_poll):
        return run
    _power_off_groups(run, order, observer or PowerObserver(), force=force, timeout=timeout, waiting=waiting,
                      poweroff=poweroff, poll=poll)
    run.timeline.add("cluster", "done")
    return run


# --- showing it --------------------------------------------------------------------------------------------


def print_shutdown(run: ShutdownRun, console: Any = None) -> None:
    """The outcome table (host, outcome, when down), notes, problems and why the run stopped."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    table = Table(title="cluster.shutdown", title_justify="left")
    for column in ("host", "outcome", "poweroff issued", "ssh closed", "down"):
        table.add_column(column, no_wrap=True)
    style = {"down": "green", "kept": "dim", "unreachable": "yellow"}
    for host, outcome in run.outcome.items():
        cells = []
        for what in ("poweroff issued", "ssh closed", "down"):
            e = run.timeline.first(host, what)
            cells.append(f"+{e.at:.1f}s" if e else "-")
        table.add_row(host, f"[{style.get(outcome, 'red')}]{outcome}[/]", *cells)
    out.print(table)
    for line in run.drain:
        out.print(f"drain: {line}", highlight=False, markup=False)
    for host, why in run.unreachable.items():
        out.print(f"[yellow]skipped {host}: unreachable:[/yellow] {why}", highlight=False)
    for line in run.problems:
        out.print(f"[red]problem:[/red] {line}", highlight=False)
    for line in run.notes:
        out.print(f"[dim]note: {line}[/dim]", highlight=False)
    out.print(f"total {run.seconds:.1f}s", highlight=False)

