"""`cluster.up`: preflight, then each selected stage on its hosts, stopping at the first failed stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster import secrets
from picluster.inventory import Host, Inventory
from picluster.ops.check import INFRA_TESTS, GateResult, run_gate
from picluster.remote import HostResult, StageResult, StepResult
from picluster.remote.phases import RunOptions, run_phases
from picluster.stages import PREFLIGHT, Stage


@dataclass
class StageOutcome:
    """What happened to one stage: its result, or why it was skipped."""

    stage: Stage
    hosts: list[str]
    result: StageResult | None = None
    gate: GateResult | None = None
    skipped: str = ""

    @property
    def failed(self) -> bool:
        stage_failed = self.result is not None and bool(self.result.failures)
        return stage_failed or (self.gate is not None and not self.gate.ok)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage.name, "hosts": self.hosts}
        if self.result is not None:
            out.update(self.result.to_dict())
        else:
            out["skipped"] = self.skipped
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
        return out


@dataclass
class UpRun:
    """Every stage's outcome, in order."""

    dry_run: bool
    outcomes: list[StageOutcome] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "failed": self.failed, "stages": [o.to_dict() for o in self.outcomes]}


def hosts_for(stage: Stage, hosts: Sequence[Host]) -> list[Host]:
    """Return the hosts among `hosts` that have a role `stage` acts on."""
    return [h for h in hosts if h.role in stage.roles]


@dataclass
class Watchers:
    """What a caller wants to hear while a run goes: a stage starts, a host is done, a gate starts."""

    stage_start: Callable[[Stage, int], None] | None = None
    host_done: Callable[[HostResult], None] | None = None
    gate_start: Callable[[str, int], None] | None = None
    controller_step: Callable[[StepResult], None] | None = None


def run_stage_with_gate(inv: Inventory, stage: Stage, hosts: Sequence[Host], options: RunOptions, *,
                        watch: Watchers | None = None, gate: bool = True, suites: Path = INFRA_TESTS) -> StageOutcome:
    """Run one stage's phases on its hosts among `hosts`, then its gate: the one way every task runs a stage.

    The gate (the stage's testinfra checks) runs when the stage did not fail, unless this is a dry run
    or `gate` is off.
    """
    watch = watch or Watchers()
    targets = hosts_for(stage, hosts)
    outcome = StageOutcome(stage, [h.name for h in targets])
    if not targets:
        outcome.skipped = "no selected host has a role this stage acts on"
        return outcome
    if watch.stage_start is not None:
        watch.stage_start(stage, len(targets))
    with secrets.dry_run(options.dry_run):    # a dry run makes no secret, CA or token on first use
        outcome.result = run_phases(stage.name, targets, stage.phases(inv, options), options,
                                    on_host_done=watch.host_done, on_controller_step=watch.controller_step)
    outcome.hosts = [h.host for h in outcome.result.hosts]
    if not outcome.failed and stage.gate and gate and not options.dry_run:
        if watch.gate_start is not None:
            watch.gate_start(stage.gate, len(targets))
        outcome.gate = run_gate(inv, stage.gate, targets, suites=suites)
    return outcome


def up(
    inv: Inventory,
    stages: Sequence[Stage],
    options: RunOptions,
    *,
    watch: Watchers | None = None,
    suites: Path = INFRA_TESTS,
) -> UpRun:
    """Run preflight and then `stages` on the inventory's hosts (narrowed by the options' limit).

    Each stage that changes hosts is followed by its gate (its testinfra checks; not in a dry run).
    A stage or gate that fails stops the run: later stages are reported as skipped with the reason.
    """
    hosts = inv.select(limit=sorted(options.limit) if options.limit is not None else None)
    run = UpRun(dry_run=options.dry_run)
    for stage in (PREFLIGHT, *stages):
        if run.failed:
            failed = next(o.stage.name for o in run.outcomes if o.failed)
            run.outcomes.append(StageOutcome(stage, [h.name for h in hosts_for(stage, hosts)],
                                             skipped=f"stage {failed} failed"))
            continue
        run.outcomes.append(run_stage_with_gate(inv, stage, hosts, options, watch=watch, suites=suites))
    return run
