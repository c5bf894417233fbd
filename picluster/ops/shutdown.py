"""`cluster.shutdown`: graceful, ordered power-off — agents, then servers, then the gateway — with a timeline.

1. Preflight, on every selected host in parallel over SSH: is it reachable (unreachable hosts are reported
   and skipped); on each K3S node, does the kubelet hold its "delay" inhibitor lock (`systemd-inhibit
   --list`), and is logind's effective InhibitDelayMaxSec (read from the running logind) at least the
   kubelet's grace period? Where graceful node shutdown would not work, say so and refuse without `force`.
2. Cordon and drain the agents through the Eviction API (PodDisruptionBudgets honoured, bounded), when
   the API answers; otherwise say why and rely on the kubelet's graceful shutdown alone.
3. Power off each group in parallel (`systemctl poweroff`, which goes through logind and so waits for the
   kubelet's delay lock) and wait, bounded, until every host of the group is down before the next group.

How "down" is observed from the controller: the SSH port first stops accepting (sshd stopped; the kernel
still answers with a reset), then the host stops answering at all — no accept, no reset — once its kernel
has halted. A real host is down when its SSH port has been silent for two polls in a row. A lab node's
network namespace outlives its container and keeps answering with resets, so for a lab inventory the lab's
own record (the node's supervisor saw the container exit) says when it is down.
"""

from __future__ import annotations

import errno
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from picluster.inventory import Host, Inventory
from picluster.kube import Kube, KubeError
from picluster.kube.shutdown import shutdown_problems
from picluster.ops.status import BOOT_ID, Facts, k3s_unit, read_all

SHUTDOWN_LABEL = "picluster.io/cordoned-for"      # set on nodes this tool cordoned; startup uncordons them
SHUTDOWN_LABEL_VALUE = "shutdown"
POWEROFF = "systemctl poweroff --no-block"
INHIBITORS = "systemd-inhibit --list --no-pager --no-legend"
INHIBIT_DELAY = ("busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
                 "org.freedesktop.login1.Manager InhibitDelayMaxUSec")
# Beyond the kubelet's grace period: systemd stopping units (k3s issue #2400: ~90 s on containerd-shim).
DOWN_MARGIN_S = 90.0
POLL_S = 0.5

PortState = Literal["open", "refused", "silent"]

# systemd-inhibit --list: WHO UID USER PID COMM WHAT WHY MODE (WHO and WHY may contain spaces).
_INHIBITOR = re.compile(r"^(?P<who>.+?)\s+(?P<uid>\d+)\s+(?P<user>\S+)\s+(?P<pid>\d+)\s+(?P<comm>\S+)\s+"
                        r"(?P<what>\S+)\s+(?P<why>.*?)\s*(?P<mode>block|delay)$")


# --- preflight (pure decisions from facts) ---------------------------------------------------------------


@dataclass(frozen=True)
class Inhibitor:
    who: str
    what: str
    why: str
    mode: str


def parse_inhibitors(text: str) -> list[Inhibitor]:
    """The lines of `systemd-inhibit --list --no-legend` as Inhibitors ("No inhibitors." gives none)."""
    found = []
    for line in text.splitlines():
        m = _INHIBITOR.match(line.strip())
        if m:
            found.append(Inhibitor(m["who"].strip(), m["what"], m["why"].strip(), m["mode"]))
    return found


def parse_usec(text: str) -> float | None:
    """`t 30000000` (busctl's answer for a uint64 µs property) -> 30.0 seconds; None when unreadable."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "t" and parts[1].isdigit():
        return int(parts[1]) / 1e6
    return None


def kubelet_lock(inhibitors: Sequence[Inhibitor]) -> Inhibitor | None:
    """The kubelet's delay lock on shutdown, if it holds one."""
    for i in inhibitors:
        if i.who.lower() == "kubelet" and i.mode == "delay" and "shutdown" in i.what.split(":"):
            return i
    return None


def preflight_probes(host: Host) -> dict[str, str]:
    probes = {"boot_id": BOOT_ID}
    unit = k3s_unit(host)
    if unit:
        probes.update(inhibitors=INHIBITORS, delay=INHIBIT_DELAY, service=f"systemctl is-active {unit}")
    return probes


def graceful_problems(host: Host, facts: Facts) -> list[str]:
    """Why graceful node shutdown would not work on this K3S node ([] when it would, or not a K3S node)."""
    if not host.is_k3s or not facts.reachable:
        return []
    grace = float(host.vars["kubelet_shutdown_grace_period"])
    critical = float(host.vars["kubelet_shutdown_grace_period_critical_pods"])
    problems = []
    if kubelet_lock(parse_inhibitors(facts.text("inhibitors"))) is None:
        unit = k3s_unit(host)
        service = facts.outputs.get("service")
        state = service.stdout.strip() if service is not None and service.stdout.strip() else "unknown"
        problems.append(f"no kubelet 'delay' inhibitor lock in `systemd-inhibit --list` ({unit} is {state}): "
                        "the kubelet would not get to stop its pods; pods are killed at power-off")
    delay = parse_usec(facts.text("delay"))
    if delay is None:
        problems.append("logind's InhibitDelayMaxSec could not be read (is systemd-logind running?)")
    else:
        problems += shutdown_problems(grace, critical, delay)
    return [f"{host.name}: {p}" for p in problems]


def groups(hosts: Sequence[Host], *, keep_gateway: bool = False) -> list[tuple[str, list[Host]]]:
    """The power-off order: every agent (together), then the servers, then the gateway (unless kept)."""
    order = [("agents", [h for h in hosts if h.role == "agent"]),
             ("servers", [h for h in hosts if h.role == "server"])]
    if not keep_gateway:
        order.append(("gateway", [h for h in hosts if h.role == "gateway"]))
    return [(name, members) for name, members in order if members]


# --- the timeline ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float          # seconds since the run started
    wall: float        # time.time() when it happened
    host: str          # a host, a group, or "cluster"
    what: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "wall": round(self.wall, 3), "host": self.host, "what": self.what,
                "detail": self.detail}


class Timeline:
    """Events in the order they happened, from any thread; `on_event` sees each as it is added."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self.start = time.monotonic()
        self.events: list[Event] = []
        self.on_event = on_event
        self._lock = threading.Lock()

    def add(self, host: str, what: str, detail: str = "") -> Event:
        with self._lock:
            event = Event(time.monotonic() - self.start, time.time(), host, what, detail)
            self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def first(self, host: str, what: str) -> Event | None:
        return next((e for e in self.events if e.host == host and e.what == what), None)


# --- observing power state from the controller ----------------------------------------------------------


def port_state(address: str, port: int, timeout: float = 1.0) -> PortState:
    """`open` (something accepts), `refused` (the kernel answers with a reset), or `silent` (no answer)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as err:
        if err.errno in (errno.ECONNRESET, errno.ECONNABORTED):
            return "refused"
        return "silent"   # timed out, host or network unreachable: nothing answers for that address


class PowerObserver:
    """Says whether a host is down: its SSH port silent twice in a row, or what the lab knows of it."""

    def __init__(self, lab_stopped: Callable[[str], bool] | None = None, probe: Callable[[str, int], PortState]
                 = port_state, silent_polls: int = 2) -> None:
        self.lab_stopped = lab_stopped
        self.probe = probe
        self.silent_polls = silent_polls
        self._silent: dict[str, int] = {}

    @property
    def how(self) -> str:
        if self.lab_stopped is not None:
            return "the lab's record of the node's container (its network namespace outlives it)"
        return f"its SSH port silent (no accept, no reset) for {self.silent_polls} polls in a row"

    def poll(self, host: Host) -> tuple[PortState, bool]:
        """The SSH port's state now, and whether the host counts as down."""
        state = self.probe(host.ssh.address, host.ssh.port)
        if self.lab_stopped is not None:
            return state, self.lab_stopped(host.name)
        self._silent[host.name] = self._silent.get(host.name, 0) + 1 if state == "silent" else 0
        return state, self._silent[host.name] >= self.silent_polls


def lab_observer(inv: Inventory) -> Callable[[str], bool] | None:
    """For a lab inventory: `stopped(name)` from the lab's own record of each node; None otherwise."""
    if inv.lab is None:
        return None
    from picluster.lab import Lab

    lab = Lab(inv)

    def stopped(name: str) -> bool:
        return {s.name: s.state for s in lab.status()}.get(name) == "stopped"

    return stopped


def issue_poweroff(host: Host, command: str = POWEROFF, timeout: float = 10.0) -> str:
    """Ask one host to power off; '' when it accepted (or dropped the session doing so), else why not."""
    from picluster.remote import Unreachable, connect
    from picluster.remote.execute import wrap

    try:
        conn = connect(host.ssh, name=host.name, timeout=timeout)
    except Unreachable as err:
        return str(err)
    try:
        result = conn.run(wrap(command, sudo=conn.user != "root"), hide=True, warn=True, in_stream=False,
                          timeout=30)
        if result is not None and result.exited != 0:
            return f"{host.name}: `{command}` exited {result.exited}: {result.stderr.strip()[-300:]}"
        return ""
    except Exception:  # NOTE: the session dropped because the host is going down: that is the point
        return ""
    finally:
        conn.close()


# --- the run ---------------------------------------------------------------------------------------------


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


Waiting = Callable[[str, int, int, list[str]], None]   # (group, down, total, still up)


def drain_agents(kube: Kube, agents: Sequence[Host], timeout: float, run: ShutdownRun, *,
                 poll: float = 1.0) -> bool:
    """Cordon every agent first (so pods do not hop between them), then drain them in parallel; True if all
    pods that had to go are gone. Nodes the API does not know are noted and skipped."""
    from picluster.kube.drain import Backoff, drain
    from picluster.kube.nodes import cordon, label, list_nodes

    tl = run.timeline
    try:
        known = {n.name for n in list_nodes(kube)}
    except KubeError as err:
        run.notes.append(f"cordon and drain skipped: {err}")
        return True
    names = [h.name for h in agents if h.name in known]
    for h in agents:
        if h.name not in known:
            run.notes.append(f"{h.name}: not registered with the API server: not cordoned or drained")
    for name in names:
        try:
            label(kube, name, {SHUTDOWN_LABEL: SHUTDOWN_LABEL_VALUE})
            cordon(kube, name)
        except KubeError as err:
            run.drain.append(f"{name}: cordon failed: {err}")
            tl.add(name, "cordon failed", str(err))
            return False
        tl.add(name, "cordoned")

    def one(name: str) -> bool:
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

    if not names:
        return True
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(one, names))
    return all(results)


def power_off_group(name: str, members: Sequence[Host], run: ShutdownRun, observer: PowerObserver,
                    timeout: float, *, waiting: Waiting | None = None,
                    poweroff: Callable[[Host], str] = issue_poweroff, poll: float = POLL_S) -> list[str]:
    """Power off every member in parallel and wait until each is down; return those that are not."""
    tl = run.timeline
    tl.add(name, "group started", ", ".join(h.name for h in members))

    def ask(h: Host) -> tuple[Host, str]:
        why = poweroff(h)
        if why:
            tl.add(h.name, "poweroff failed", why)
        else:
            tl.add(h.name, "poweroff issued")
        return h, why

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        asked = list(pool.map(ask, members))
    pending = [h for h, why in asked if not why]
    for h, why in asked:
        if why:
            run.outcome[h.name] = "failed"
    closed: set[str] = set()
    deadline = time.monotonic() + timeout
    while pending:
        if waiting is not None:
            waiting(name, len(members) - len(pending), len(members), [h.name for h in pending])
        with ThreadPoolExecutor(max_workers=len(pending)) as pool:   # a silent host costs a connect timeout
            polled = list(zip(list(pending), pool.map(observer.poll, pending), strict=True))
        for h, (state, down) in polled:
            if state != "open" and h.name not in closed:
                closed.add(h.name)
                tl.add(h.name, "ssh closed", f"port {h.ssh.port} {state}")
            if down:
                pending.remove(h)
                run.outcome[h.name] = "down"
                tl.add(h.name, "down")
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    for h in pending:
        run.outcome[h.name] = "still up"
        tl.add(h.name, "still up", f"not down after {timeout:g}s")
    if waiting is not None:
        waiting(name, len(members) - len(pending), len(members), [h.name for h in pending])
    tl.add(name, "group done")
    return [h.name for h in pending] + [h.name for h, why in asked if why]


def down_timeout(members: Sequence[Host]) -> float:
    """How long a group may take to be down: the longest kubelet grace period in it plus a margin."""
    grace = max((float(h.vars["kubelet_shutdown_grace_period"]) for h in members if h.is_k3s), default=0.0)
    return grace + DOWN_MARGIN_S


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
    read: Callable[[Sequence[Host]], Mapping[str, Facts]] | None = None,
    poll: float = POLL_S,
) -> ShutdownRun:
    """Preflight, drain the agents, then power off agents → servers → gateway, each group waited for.

    `kube` is the cluster's API (None: no cordon or drain, and `kube_note` says why). Refuses (nothing is
    changed) when graceful node shutdown would not work on a K3S node, unless `force`; stops before the
    next group when a host of this group is not down in time, unless `force`.
    """
    run = ShutdownRun(Timeline(on_event))
    tl = run.timeline
    observer = observer or PowerObserver()
    order = groups(hosts, keep_gateway=keep_gateway)
    for h in hosts:
        run.outcome[h.name] = "kept" if keep_gateway and h.role == "gateway" else "not started"
    tl.add("cluster", "preflight started", ", ".join(h.name for g in order for h in g[1]))
    targets = [h for _, members in order for h in members]
    facts = dict(read(targets)) if read is not None else read_all(targets, preflight_probes, parallel=parallel)
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
        return run
    if run.problems:
        run.notes.append("graceful node shutdown would not work (see the problems); going ahead: --force")
    order = [(name, [h for h in members if h.name not in run.unreachable]) for name, members in order]
    order = [(name, members) for name, members in order if members]

    agents = [h for h in next((m for n, m in order if n == "agents"), [])]
    if not drain:
        run.notes.append("cordon and drain skipped (--no-drain): the kubelets' graceful shutdown alone stops pods")
    elif kube is None:
        run.notes.append(f"cordon and drain skipped: {kube_note or 'no Kubernetes API'}; "
                         "the kubelets' graceful shutdown alone stops pods")
    elif agents:
        tl.add("agents", "drain started")
        drained = drain_agents(kube, agents, drain_timeout, run, poll=drain_poll)
        tl.add("agents", "drain done", "complete" if drained else "incomplete")
        if not drained and not force:
            run.stopped = ("the drain did not finish (see the drain lines); nothing was powered off and the agents "
                           "stay cordoned (`invoke cluster.startup` uncordons them); fix what blocks it, or power "
                           "off anyway with --force or --no-drain")
            return run

    for index, (name, members) in enumerate(order):
        left = power_off_group(name, members, run, observer,
                               timeout if timeout is not None else down_timeout(members),
                               waiting=waiting, poweroff=poweroff, poll=poll)
        if left:
            rest = [h.name for _, m in order[index + 1:] for h in m]
            if not force and rest:
                run.stopped = (f"{', '.join(left)} not down: {', '.join(rest)} left running so the order holds "
                               "(look at the host's console; --force goes on regardless)")
                for name_left in rest:
                    run.outcome[name_left] = "left running"
                break
            run.notes.append(f"{', '.join(left)} not down; going on (--force)" if rest else
                             f"{', '.join(left)} not down")
    tl.add("cluster", "done")
    return run


# --- showing it --------------------------------------------------------------------------------------------


def event_line(e: Event) -> str:
    detail = f"  [dim]{e.detail}[/dim]" if e.detail else ""
    return f"[dim]+{e.at:6.1f}s[/dim] {e.host:<10} {e.what}{detail}"


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
