"""`cluster.up`: preflight, then each selected stage on its hosts, stopping at the first failed stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster import secrets
from picluster.inventory import Host, Inventory
from picluster.ops.check import INFRA_TESTS, GateResult, run_gate
from picluster.remote import HostResult, StageResult, run_stage
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


def _hosts_for(stage: Stage, hosts: Sequence[Host]) -> list[Host]:
    return [h for h in hosts if h.role in stage.roles]


def up(
    inv: Inventory,
    stages: Sequence[Stage],
    *,
    limit: Sequence[str] | None = None,
    dry_run: bool = False,
    parallel: int = 10,
    on_stage_start: Callable[[Stage, int], None] | None = None,
    on_host_done: Callable[[HostResult], None] | None = None,
    on_gate_start: Callable[[str, int], None] | None = None,
    suites: Path = INFRA_TESTS,
) -> UpRun:
    """Run preflight and then `stages` on the inventory's hosts (narrowed by `limit`).

    Each stage that changes hosts is followed by its gate (its testinfra checks; not in a dry run).
    A stage or gate that fails stops the run: later stages are reported as skipped with the reason.
    """
    hosts = inv.select(limit=limit)
    run = UpRun(dry_run=dry_run)
    blocked = ""
    for stage in (PREFLIGHT, *stages):
        targets = _hosts_for(stage, hosts)
        outcome = StageOutcome(stage, [h.name for h in targets])
        run.outcomes.append(outcome)
        if blocked:
            outcome.skipped = blocked
        elif not targets:
            outcome.skipped = "no selected host has a role this stage acts on"
        elif stage.plan is None:
            outcome.skipped = f"not built yet (issue #{stage.issue})"
        else:
            if on_stage_start is not None:
                on_stage_start(stage, len(targets))
            with secrets.dry_run(dry_run):    # a dry run makes no secret, CA or token on first use
                outcome.result = run_stage(stage.name, targets, stage.plan(inv), dry_run=dry_run,
                                           parallel=parallel, on_host_done=on_host_done, check=False)
                if stage.controller is not None and not outcome.failed:
                    controller = stage.controller(inv, dry_run)
                    outcome.result.hosts.append(controller)
                    outcome.hosts.append(controller.host)
            if not outcome.failed and stage.gate and not dry_run:
                if on_gate_start is not None:
                    on_gate_start(stage.gate, len(targets))
                outcome.gate = run_gate(inv, stage.gate, targets, suites=suites)
            if outcome.failed:
                blocked = f"stage {stage.name} failed"
    return run
