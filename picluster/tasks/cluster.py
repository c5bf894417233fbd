"""Tasks that act on the whole cluster: up, shutdown, startup, reboot (rolling) and status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, positive, require_reachable, split_names
from picluster.tasks._stage import AIRGAP_HELP, APPLY_HELP, run_options

if TYPE_CHECKING:
    from picluster.inventory import Host, Inventory
    from picluster.kube import Kube
    from picluster.ops.power import PowerObserver


@task(
    help={
        "inventory": INVENTORY_HELP,
        "only": "run only these stages, comma-separated (os,gateway,k3s,apps)",
        "from": "start at this stage and run the ones after it (resume after a failure)",
        "limit": "act only on these hosts, comma-separated",
        "dry-run": "read facts and print what would change, per host and step; change nothing (not even a secret made)",
        "parallel": "how many hosts at once (default 10)",
        "verbose": "show each step's reason or diff",
        "report": "also write the result as JSON to this file",
        "airgap": AIRGAP_HELP,
        "host-timeout": APPLY_HELP["host-timeout"],
    },
)
def up(
    c: Context,
    inventory: str | None = None,
    only: str | None = None,
    from_: str | None = None,
    limit: str | None = None,
    dry_run: bool = False,
    parallel: int = 10,
    verbose: bool = False,
    report: str | None = None,
    airgap: str | None = None,
    host_timeout: float | None = None,
) -> None:
    """Bring the cluster up: preflight, then os → gateway → k3s → apps, each followed by its checks."""
    from picluster import stages as stage_catalog
    from picluster.console import make_console
    from picluster.inventory import InventoryError
    from picluster.ops.summary import HostProgress, print_up
    from picluster.ops.up import Watchers
    from picluster.ops.up import up as run_up
    from picluster.report import write_report

    inv = load(inventory)
    options = run_options(limit=limit, dry_run=dry_run, parallel=parallel, airgap=airgap,
                          host_timeout=_positive("host-timeout", host_timeout))
    try:
        stages = stage_catalog.select(split_names(only), from_)
    except ValueError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    try:
        inv.select(limit=split_names(limit))
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    require_reachable(inv)

    console = make_console()
    with HostProgress(console) as progress:
        run = run_up(inv, stages, options, watch=Watchers(stage_start=progress.start_stage,
                                                          host_done=progress.host_done,
                                                          gate_start=progress.start_gate))
    print_up(run, verbose=verbose, console=console)
    if report:
        write_report(report, run.to_dict())
    if run.failed:
        raise Exit("cluster.up failed: see the stage errors above; fix them and run again "
                   "(it only changes what still differs)", code=1)


def _power_observer(inv: Inventory) -> PowerObserver:
    """Down means a silent SSH port; a lab node's network namespace outlives its container (its address
    keeps answering with resets), so for a lab inventory the lab's record of each node says it instead."""
    from picluster.ops.power import PowerObserver

    if inv.lab is None:
        return PowerObserver()
    from picluster.lab import Lab

    lab = Lab(inv)
    return PowerObserver(lambda name: {s.name: s.state for s in lab.status()}.get(name) == "stopped",
                         how="the lab's record of the node's container (its network namespace outlives it)")


KUBECONFIG_HELP = "the cluster's kubeconfig (default: $PICLUSTER_KUBECONFIG, else the one the k3s stage fetched)"


def _hosts(inventory: str | None, limit: str | None, *, k3s: bool = False) -> tuple[Inventory, list[Host]]:
    """The inventory and its selected hosts (with `k3s`, at least one K3S node); usage errors exit 2;
    a lab inventory's lab must be up."""
    from picluster.inventory import InventoryError

    inv = load(inventory)
    try:
        hosts = inv.select(limit=split_names(limit))
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    if k3s and not any(h.is_k3s for h in hosts):
        raise Exit("error: no K3S node selected: the rolling reboot acts on servers and agents", code=USAGE_ERROR)
    require_reachable(inv)
    return inv, hosts


def _positive(name: str, value: float | str | None) -> float | None:
    """A duration option as seconds, None when not given; exit 2 unless a number > 0."""
    return None if value is None else positive(name, value)


def _kube(inv: Inventory, kubeconfig: str | None, wanted: bool = True, wait: float = 0.0) -> tuple[Kube | None, str]:
    from picluster.ops.status import open_kube

    if not wanted:
        return None, "not asked for"
    return open_kube(inv, kubeconfig, wait=wait)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "act only on these hosts, comma-separated (the order rules still apply among them)",
        "force": "go on where graceful shutdown would not work, a drain does not finish, or a host is not down",
        "no-drain": "do not cordon and drain the agents: rely on the kubelets' graceful shutdown alone",
        "keep-gateway": "leave the gateway running",
        "kubeconfig": KUBECONFIG_HELP,
        "drain-timeout": "seconds the drain of the agents may take (default 300)",
        "timeout": "seconds each group may take to be down (default: its kubelet grace period + 90)",
        "report": "also write the result and the timeline as JSON to this file",
    },
)
def shutdown(
    c: Context,
    inventory: str | None = None,
    limit: str | None = None,
    force: bool = False,
    no_drain: bool = False,
    keep_gateway: bool = False,
    kubeconfig: str | None = None,
    drain_timeout: float = 300.0,
    timeout: float | None = None,
    report: str | None = None,
) -> None:
    """Power the cluster off gracefully: preflight, drain the agents, then agents → servers → gateway, waited for."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from picluster.console import is_live, make_console
    from picluster.ops.shutdown import event_line, print_shutdown
    from picluster.ops.shutdown import shutdown as run_shutdown
    from picluster.report import write_report

    drain_timeout = _positive("drain-timeout", drain_timeout) or drain_timeout
    timeout = _positive("timeout", timeout)
    inv, hosts = _hosts(inventory, limit)
    console = make_console()
    has_agents = any(h.role == "agent" for h in hosts)
    kube, note = _kube(inv, kubeconfig, wanted=not no_drain and has_agents)
    observer = _power_observer(inv)
    console.print(f"[dim]down means: {observer.how}[/dim]", highlight=False)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, disable=not is_live(console))
    bars: dict[str, Any] = {}
    said: dict[str, int] = {}

    def on_wait(group: str, done: int, total: int, pending: list[str]) -> None:
        if group not in bars:
            bars[group] = progress.add_task(group, total=total)
        wait_for = f" (waiting for {', '.join(pending)})" if pending else ""
        progress.update(bars[group], completed=done, description=f"{group}: down{wait_for}")
        if not is_live(console) and said.get(group) != done:  # no bar to redraw: one line per change
            said[group] = done
            console.print(f"{group}: {done}/{total} down{wait_for}", highlight=False, markup=False)

    with progress:
        run = run_shutdown(inv, hosts, kube=kube, kube_note=note, drain=not no_drain, force=force,
                           keep_gateway=keep_gateway, drain_timeout=drain_timeout, timeout=timeout,
                           observer=observer, on_event=lambda e: console.print(event_line(e), highlight=False),
                           waiting=on_wait)
    print_shutdown(run, console)
    if report:
        write_report(report, run.to_dict())
    if run.refused:
        raise Exit(f"cluster.shutdown refused: {run.refused}", code=1)
    if run.stopped:
        raise Exit(f"cluster.shutdown stopped: {run.stopped}", code=1)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "wait only for these hosts, comma-separated",
        "kubeconfig": KUBECONFIG_HELP,
        "timeout": "seconds each group (gateway, servers, agents) may take to boot (default 600)",
        "ready-timeout": "seconds the nodes may take to be Ready in the API (default 300)",
        "workloads-timeout": "seconds the workloads may take to be ready (default 600)",
        "report": "also write the result and the timeline as JSON to this file",
    },
)
def startup(
    c: Context,
    inventory: str | None = None,
    limit: str | None = None,
    kubeconfig: str | None = None,
    timeout: float = 600.0,
    ready_timeout: float = 300.0,
    workloads_timeout: float = 600.0,
    report: str | None = None,
) -> None:
    """After power-on: wait for gateway → servers → agents, uncordon what shutdown cordoned, wait for workloads."""
    from picluster.console import is_live, make_console
    from picluster.ops.shutdown import event_line
    from picluster.ops.startup import startup as run_startup
    from picluster.report import write_report

    for name, value in (("timeout", timeout), ("ready-timeout", ready_timeout),
                        ("workloads-timeout", workloads_timeout)):
        _positive(name, value)
    inv, hosts = _hosts(inventory, limit)
    console = make_console()
    status = console.status("")

    def on_group(group: str, names: list[str]) -> None:
        status.update(f"waiting for the {group}: {', '.join(names)}")
        if not is_live(console):  # no spinner to redraw: one line per group
            console.print(f"waiting for the {group}: {', '.join(names)}", highlight=False, markup=False)

    with status:
        run = run_startup(hosts, timeout=timeout, ready_timeout=ready_timeout, workloads_timeout=workloads_timeout,
                          on_event=lambda e: console.print(event_line(e), highlight=False), on_group=on_group,
                          kube_factory=lambda: _kube(inv, kubeconfig, any(h.is_k3s for h in hosts), wait=ready_timeout))
    for line in run.notes:
        console.print(f"[dim]note: {line}[/dim]", highlight=False)
    if report:
        write_report(report, run.to_dict())
    if run.failed:
        raise Exit(f"cluster.startup: {run.error}", code=1)
    console.print(f"[green]cluster.startup: {len(run.up)} hosts up[/green]"
                  + (f", uncordoned {', '.join(run.uncordoned)}" if run.uncordoned else ""), highlight=False)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "reboot only these K3S nodes, comma-separated",
        "kubeconfig": KUBECONFIG_HELP,
        "drain-timeout": "seconds each node's drain may take (default 300)",
        "ready-timeout": "seconds each node may take to be Ready again (default 300)",
        "timeout": "seconds each node may take to answer SSH with a new boot id (default 600)",
        "report": "also write the result and the timeline as JSON to this file",
    },
)
def reboot(
    c: Context,
    inventory: str | None = None,
    limit: str | None = None,
    kubeconfig: str | None = None,
    drain_timeout: float = 300.0,
    ready_timeout: float = 300.0,
    timeout: float = 600.0,
    report: str | None = None,
) -> None:
    """Rolling reboot, one node at a time, servers then agents: cordon, drain, reboot, wait Ready, uncordon."""
    from picluster.console import make_console
    from picluster.ops.reboot import rolling_reboot
    from picluster.ops.shutdown import event_line
    from picluster.report import write_report

    for name, value in (("drain-timeout", drain_timeout), ("ready-timeout", ready_timeout), ("timeout", timeout)):
        _positive(name, value)
    inv, hosts = _hosts(inventory, limit, k3s=True)
    console = make_console()
    kube, note = _kube(inv, kubeconfig)
    with console.status("rolling reboot"):
        run = rolling_reboot(hosts, kube=kube, kube_note=note, drain_timeout=drain_timeout,
                             ready_timeout=ready_timeout, back_timeout=timeout,
                             on_event=lambda e: console.print(event_line(e), highlight=False), progress=False)
    for line in run.notes:
        console.print(f"[dim]note: {line}[/dim]", highlight=False)
    if report:
        write_report(report, run.to_dict())
    if run.failed:
        raise Exit(f"cluster.reboot stopped: {run.error}", code=1)
    console.print(f"[green]cluster.reboot: {', '.join(run.done)} rebooted and back[/green]", highlight=False)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "only these hosts, comma-separated",
        "kubeconfig": KUBECONFIG_HELP,
        "report": "also write the status as JSON to this file",
        "json": "print the status as JSON instead of the table (the same data as --report)",
    },
)
def status(c: Context, inventory: str | None = None, limit: str | None = None, kubeconfig: str | None = None,
           report: str | None = None, json: bool = False) -> None:
    """Per host: SSH, uptime, K3S service and version, node Ready/cordoned; exit 1 when something is wrong."""
    from picluster.console import make_console, print_json
    from picluster.ops.status import print_status
    from picluster.ops.status import status as read_status
    from picluster.report import write_report

    inv, hosts = _hosts(inventory, limit)
    console = make_console(stderr=json)
    with console.status("reading the hosts"):
        run = read_status(inv, hosts, kubeconfig=kubeconfig)
    if json:
        print_json(run.to_dict())
    else:
        print_status(run, console)
    if report:
        write_report(report, run.to_dict())
    if run.problems:
        raise Exit(f"cluster.status: {len(run.problems)} problems (above)", code=1)


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "update only these hosts, comma-separated (the order rules still apply among them)",
        "dry-run": "print what each host would upgrade (apt-get -s dist-upgrade against fresh lists); change nothing",
        "kubeconfig": KUBECONFIG_HELP,
        "drain-timeout": "seconds each node's drain may take (default 300)",
        "ready-timeout": "seconds each node may take to be Ready again (default 300)",
        "verbose": "show each step's reason or diff",
        "report": "also write the result and the timeline as JSON to this file",
        "no-checks": "do not run the os checks afterwards",
    },
)
def update(c: Context, inventory: str | None = None, limit: str | None = None, dry_run: bool = False,
           kubeconfig: str | None = None, drain_timeout: float = 300.0, ready_timeout: float = 300.0,
           verbose: bool = False, report: str | None = None, no_checks: bool = False) -> None:
    """Upgrade OS packages: the gateway alone, then K3S nodes one at a time (drain, reboot if required, Ready)."""
    from pathlib import Path

    from picluster.console import make_console
    from picluster.ops.timeline import Timeline, event_line
    from picluster.ops.update import update_stage
    from picluster.tasks._maintenance import run_stage_task, selected

    drain_timeout, ready_timeout = positive("drain-timeout", drain_timeout), positive("ready-timeout", ready_timeout)
    options = run_options(limit=limit, dry_run=dry_run, parallel=10)
    console = make_console()
    timeline = Timeline(lambda e: console.print(event_line(e), highlight=False))
    inv, hosts = selected(inventory, options, ("gateway", "server", "agent"))
    stage = update_stage(inv, timeline, kubeconfig=Path(kubeconfig).expanduser() if kubeconfig else None,
                         drain_timeout=drain_timeout, ready_timeout=ready_timeout)
    run_stage_task(inv, stage, hosts, options, verbose=verbose, report=report, no_checks=no_checks,
                   extra=lambda: {"timeline": [e.to_dict() for e in timeline.events]})


@task(
    help={
        "inventory": INVENTORY_HELP,
        "limit": "reset only these K3S nodes, comma-separated",
        "wipe-storage": "also delete everything under /storage on the agents (Longhorn's data)",
        "yes": "do not ask before resetting",
        "dry-run": "read each node and print what would be removed; change nothing (asks nothing)",
        "verbose": "show each step's reason or diff",
        "report": "also write the result as JSON to this file",
        "no-checks": "do not run the os checks afterwards",
    },
)
def reset(c: Context, inventory: str | None = None, limit: str | None = None, wipe_storage: bool = False,
          yes: bool = False, dry_run: bool = False, verbose: bool = False, report: str | None = None,
          no_checks: bool = False) -> None:
    """Uninstall K3S from every node and clean its logs and state (/storage only with --wipe-storage); asks first."""
    import sys

    from picluster.ops.reset import reset_stage, what_it_does
    from picluster.tasks._maintenance import run_stage_task, selected

    stage = reset_stage(wipe_storage=wipe_storage)
    options = run_options(limit=limit, dry_run=dry_run, parallel=10)
    inv, hosts = selected(inventory, options, stage.roles)
    if not dry_run and not yes:
        print("cluster.reset will, on each of these hosts:")
        print("\n".join(f"  {line}" for line in what_it_does(hosts, wipe_storage=wipe_storage)))
        print("Type 'yes' to go on: ", end="", flush=True)
        answer = sys.stdin.readline().strip() if sys.stdin else ""
        if answer != "yes":
            raise Exit("cluster.reset: not confirmed; nothing was changed", code=1)
    run_stage_task(inv, stage, hosts, options, verbose=verbose, report=report, no_checks=no_checks)
    if not dry_run:
        print("K3S is gone from these nodes; `cluster.up` builds the cluster again")
