"""`cluster.status`, and what the other operations share: reading a host's facts, reaching the API.

Per host: does it answer SSH, how long since it booted, is its K3S service active and which K3S it runs;
per K3S node, what the API says (Ready, cordoned, kubelet version); every version beside the pinned one.
A host that does not answer, a node that is not Ready or runs another K3S than the pinned one is a problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster import localfs
from picluster.facts import BOOT_ID, K3S_VERSION, k3s_unit, k3s_version
from picluster.inventory import Host, Inventory
from picluster.kube import Kube, KubeError
from picluster.remote import ProbeOutput

# Seconds since PID 1 started: the node's own boot, also in a container (where /proc/uptime is the host's).
UPTIME = "ps -o etimes= -p 1"


# --- reaching hosts and the API ------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What one round trip of probes read on a host, or why the host could not be asked."""

    host: str
    outputs: Mapping[str, ProbeOutput] = field(default_factory=dict)
    error: str = ""

    @property
    def reachable(self) -> bool:
        return not self.error

    def text(self, name: str) -> str:
        """A probe's stdout, stripped ('' when it failed or the host was not reached)."""
        out = self.outputs.get(name)
        return out.stdout.strip() if out is not None and out.ok else ""

    def answer(self, name: str) -> str:
        """A probe's stdout, stripped, whatever its exit status (`systemctl is-active` exits 3 saying
        "inactive"); '' when it was not run."""
        out = self.outputs.get(name)
        return out.stdout.strip() if out is not None else ""


def read_facts(host: Host, probes: Mapping[str, str], *, timeout: float = 10.0) -> Facts:
    """Run `probes` on `host` in one SSH round trip (as root); never raises."""
    from picluster.remote import Executor, Unreachable, connect
    from picluster.remote.execute import CommandFailed

    try:
        conn = connect(host.ssh, name=host.name, timeout=timeout)
    except Unreachable as err:
        return Facts(host.name, error=str(err))
    try:
        ex = Executor(conn, sudo=conn.user != "root", command_timeout=30)
        return Facts(host.name, ex.read(probes))
    except CommandFailed as err:
        return Facts(host.name, error=f"{host.name}: reading facts failed: {err}")
    except Exception as err:  # NOTE: the host went away while we asked
        return Facts(host.name, error=f"{host.name}: the SSH session broke: {type(err).__name__}: {err}")
    finally:
        conn.close()


def read_all(hosts: Sequence[Host], probes: Callable[[Host], Mapping[str, str]], *,
             parallel: int = 10, timeout: float = 10.0) -> dict[str, Facts]:
    """`read_facts` on every host in parallel, by host name."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        found = list(pool.map(lambda h: read_facts(h, probes(h), timeout=timeout), hosts))
    return {f.host: f for f in found}


def default_kubeconfig(inv: Inventory) -> Path:
    """Where the k3s stage fetched the cluster's kubeconfig (`picluster.stages.k3s.kubeconfig_path`)."""
    from picluster.stages.k3s import kubeconfig_path

    return kubeconfig_path(inv)


def open_kube(inv: Inventory, kubeconfig: str | os.PathLike[str] | None = None,
              *, request_timeout: float = 10.0, wait: float = 0.0, poll: float = 2.0) -> tuple[Kube | None, str]:
    """The cluster's API if it answers (asked again for up to `wait` seconds, e.g. while the servers start),
    else None and why (one line, said to the user as the skip reason)."""
    import time

    from picluster.kube.nodes import list_nodes

    path = Path(kubeconfig).expanduser() if kubeconfig else default_kubeconfig(inv)
    if not path.is_file():
        return None, (f"no kubeconfig at {path} (the k3s stage fetches it; or give --kubeconfig / "
                      f"${localfs.KUBECONFIG_ENV})")
    kube = Kube(path, request_timeout=request_timeout)
    deadline = time.monotonic() + wait
    while True:
        try:
            list_nodes(kube)
            return kube, ""
        except KubeError as err:
            if time.monotonic() >= deadline:
                return None, f"the Kubernetes API does not answer: {err}"
        time.sleep(max(0.0, min(poll, deadline - time.monotonic())))


# --- status --------------------------------------------------------------------------------------------


def status_probes(host: Host) -> dict[str, str]:
    probes = {"boot_id": BOOT_ID, "uptime": UPTIME,
              "os": ". /etc/os-release && printf '%s\\n' \"$PRETTY_NAME\""}
    unit = k3s_unit(host.role)
    if unit:
        probes["service"] = f"systemctl is-active {unit}"
        probes["k3s"] = K3S_VERSION
    return probes


@dataclass
class HostStatus:
    """One host's row: reachability, uptime, K3S service and version, the API's view of its node."""

    name: str
    role: str
    reachable: bool
    error: str = ""
    uptime: float | None = None
    os: str = ""
    service: str = ""                # active / inactive / failed / "" (no K3S on this host)
    k3s_version: str = ""            # from `k3s --version` on the host ("" when not installed)
    node: str = ""                   # Ready / NotReady / not registered / "" (no API)
    cordoned: bool = False
    kubelet_version: str = ""
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def host_status(host: Host, facts: Facts, pinned: str, nodes: Mapping[str, Any] | None, api_note: str) -> HostStatus:
    """Decide one host's row and its problems from what was read (pure)."""
    row = HostStatus(host.name, host.role, facts.reachable, error=facts.error)
    if not facts.reachable:
        row.problems.append(f"{host.name} does not answer SSH: {facts.error}")
        return row
    uptime = facts.text("uptime")
    row.uptime = float(uptime) if uptime.isdigit() else None
    row.os = facts.text("os")
    unit = k3s_unit(host.role)
    if unit is None:
        return row
    row.service = facts.answer("service") or "unknown"
    row.k3s_version = k3s_version(facts.text("k3s")) or ""
    if not row.k3s_version:
        row.problems.append(f"{host.name}: k3s is not installed (run `invoke cluster.up --only k3s`)")
    elif row.k3s_version != pinned:
        row.problems.append(f"{host.name}: k3s is {row.k3s_version}, pinned {pinned} (k8s/versions.yml)")
    if row.k3s_version and row.service != "active":
        row.problems.append(f"{host.name}: {unit} is {row.service}; look at `journalctl -u {unit}`")
    if nodes is None:
        return row
    info = nodes.get(host.name)
    if info is None:
        row.node = "not registered"
        row.problems.append(f"{host.name}: not registered with the API server")
        return row
    row.node = "Ready" if info.ready else "NotReady"
    row.cordoned = info.unschedulable
    row.kubelet_version = info.kubelet_version
    if not info.ready:
        row.problems.append(f"{host.name}: node NotReady ({info.reason})")
    if info.kubelet_version and info.kubelet_version != pinned:
        row.problems.append(f"{host.name}: kubelet is {info.kubelet_version}, pinned {pinned}")
    return row


@dataclass
class StatusRun:
    pinned_k3s: str
    api: str                          # "" when the API answered, else why it was not asked
    hosts: list[HostStatus]

    @property
    def problems(self) -> list[str]:
        return [p for h in self.hosts for p in h.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"pinned": {"k3s": self.pinned_k3s}, "api": self.api or "ok", "problems": self.problems,
                "hosts": [h.to_dict() for h in self.hosts]}


def status(inv: Inventory, hosts: Sequence[Host], *, kubeconfig: str | None = None, parallel: int = 10,
           pinned: str | None = None) -> StatusRun:
    """Read every host's status over SSH and, when it answers, the API's view of the K3S nodes."""
    from picluster.kube.nodes import list_nodes
    from picluster.versions import k3s_version as pinned_k3s

    pin = pinned or pinned_k3s()
    facts = read_all(hosts, status_probes, parallel=parallel)
    nodes: dict[str, Any] | None = None
    api = "no K3S node selected"
    if any(h.is_k3s for h in hosts):
        kube, api = open_kube(inv, kubeconfig)
        if kube is not None:
            try:
                nodes = {n.name: n for n in list_nodes(kube)}
            except KubeError as err:
                api = f"the Kubernetes API does not answer: {err}"
    return StatusRun(pin, api, [host_status(h, facts[h.name], pin, nodes, api) for h in hosts])


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{s % 60:02d}s"


def print_status(run: StatusRun, console: Any = None) -> None:
    """The status table, then the API note and every problem, one line each."""
    from rich.table import Table

    from picluster.console import make_console, print_table

    out = console or make_console()
    table = Table(title="cluster.status", title_justify="left")
    for column in ("host", "role", "ssh", "uptime", "k3s service", "k3s", "node", "kubelet", "os"):
        table.add_column(column, no_wrap=column in ("uptime", "k3s", "kubelet"))  # versions stay whole
    for h in run.hosts:
        ssh = "[green]yes[/]" if h.reachable else "[red]no[/]"
        service = {"active": "[green]active[/]", "": "-"}.get(h.service, f"[red]{h.service}[/]")
        k3s = h.k3s_version or ("-" if h.role == "gateway" else "[red]not installed[/]")
        if h.k3s_version and h.k3s_version != run.pinned_k3s:
            k3s = f"[yellow]{h.k3s_version}[/]"
        node = {"Ready": "[green]Ready[/]", "": "-"}.get(h.node, f"[red]{h.node}[/]")
        if h.cordoned:
            node += ",[yellow]cordoned[/]"
        table.add_row(h.name, h.role, ssh, format_uptime(h.uptime), service if h.reachable else "-",
                      k3s if h.reachable else "-", node, h.kubelet_version or "-", h.os or "-")
    print_table(out, table)
    out.print(f"pinned: k3s {run.pinned_k3s} (k8s/versions.yml)", highlight=False)
    if run.api:
        out.print(f"[dim]API: not asked: {run.api}[/dim]", highlight=False)
    for line in run.problems:
        out.print(f"[red]problem:[/red] {line}", highlight=False)
