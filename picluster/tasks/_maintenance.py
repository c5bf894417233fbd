"""Shared by the maintenance tasks: run a maintenance `Stage` with its checks, print it, exit 1 on failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from invoke.exceptions import Exit

from picluster.tasks._common import USAGE_ERROR, load, positive, require_reachable

if TYPE_CHECKING:
    from picluster.inventory import Host, Inventory
    from picluster.ops.up import StageOutcome
    from picluster.remote.phases import RunOptions
    from picluster.stages import Stage


def selected(inventory: str | None, options: RunOptions, roles: tuple[str, ...]) -> tuple[Inventory, list[Host]]:
    """The inventory and the run's hosts with one of `roles`; none, or an unknown --limit name: exit 2."""
    from picluster.inventory import InventoryError

    inv = load(inventory)
    try:
        hosts = inv.select(limit=sorted(options.limit) if options.limit is not None else None)
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    hosts = [h for h in hosts if h.role in roles]
    if not hosts:
        raise Exit(f"error: no selected host is a {' or '.join(roles)}", code=USAGE_ERROR)
    require_reachable(inv)
    return inv, hosts


def print_gate(outcome: StageOutcome) -> bool:
    """Print the outcome's checks (if they ran); return whether they passed."""
    gate = outcome.gate
    if gate is None:
        return True
    word = "ok" if gate.ok else "FAILED"
    print(f"checks {outcome.stage.gate}: {word}: {gate.passed} passed, {gate.failed} failed, {gate.skipped} skipped "
          f"({gate.duration:.1f}s)")
    for line in gate.failures:
        print(f"  {line}")
    if not gate.ok and not gate.failures:
        print("\n".join("  " + line for line in gate.output.strip().splitlines()[-15:]))
    return gate.ok


def run_stage_task(inv: Inventory, stage: Stage, hosts: list[Host], options: RunOptions, *, verbose: bool,
                   report: str | None, no_checks: bool = False,
                   extra: Callable[[], dict[str, Any]] | None = None) -> StageOutcome:
    """Run `stage` and its checks on `hosts`; print the table and the checks; exit 1 when either failed.

    The report (JSON) has the stage's result, its checks, and what `extra()` adds (a timeline).
    """
    from picluster.ops.up import Watchers, run_stage_with_gate
    from picluster.remote import StageFailed
    from picluster.report import print_stage, write_report

    said = Watchers(controller_step=lambda step: print(f"  {step.status:<8} {step.name}", flush=True))
    outcome = run_stage_with_gate(inv, stage, hosts, options, watch=said, gate=not no_checks)
    assert outcome.result is not None
    print_stage(outcome.result, verbose=verbose)
    if report:
        write_report(report, {"stages": [outcome.to_dict()], **(extra() if extra else {})})
    if outcome.result.failures:
        raise Exit(str(StageFailed(outcome.result)), code=1)
    if not print_gate(outcome):
        raise Exit(f"{stage.name} ran, but its checks failed: see above", code=1)
    return outcome


def one_host(inventory: str | None, name: str) -> tuple[Inventory, Host]:
    """The inventory and its host `name` (exit 2 when it has none); a lab inventory's lab must be up."""
    inv = load(inventory)
    host = inv.hosts.get(name)
    if host is None:
        raise Exit(f"error: {inv.path} has no host {name!r}; hosts are {', '.join(inv.hosts)}", code=USAGE_ERROR)
    require_reachable(inv)
    return inv, host


def velero_task(inventory: str | None, kubeconfig: str | None, kind: str, body: dict[str, Any],
                timeout: float | str) -> None:
    """Create a Velero object, wait for its phase, print Velero's summary; exit 1 with its words on failure."""
    from picluster.kube import KubeError
    from picluster.ops.backups import VeleroFailed, velero_run
    from picluster.ops.status import open_kube

    seconds = positive("timeout", timeout)
    inv = load(inventory)
    require_reachable(inv)
    kube, why = open_kube(inv, kubeconfig)
    if kube is None:
        raise Exit(f"{kind.lower()} not made: {why}", code=1)
    name = body["metadata"]["name"]
    try:
        line = velero_run(kube, kind, body, timeout=seconds,
                          on_phase=lambda phase: print(f"  {kind} {name}: {phase}", flush=True))
    except (KubeError, VeleroFailed) as err:
        raise Exit(f"{kind.lower()} failed: {err}", code=1) from None
    print(line)
