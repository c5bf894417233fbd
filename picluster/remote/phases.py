"""A stage as phases: host phases run their steps on every host at once; controller phases run on this machine.

The runner runs the phases in order and keeps one result table: a row per host (the steps of every host
phase, and any steps a controller phase ran on that host) and a row "controller" for the work done here.
A host that failed is left out of later phases; a controller phase runs only while no host has failed,
since it acts on what the host phases built.

A controller phase is made of `ControllerStep`s, which read fresh facts (the API, or probes on a host),
decide without I/O, then act. It may run host steps on chosen hosts (`ControllerContext.run_on`, one host at
a time for a rolling change); their results join that host's row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from fabric import Config

from picluster.remote.connect import DEFAULT_HOST_TIMEOUT, DEFAULT_TIMEOUT, Unreachable, connect
from picluster.remote.execute import LOST, CommandFailed, Executor
from picluster.remote.results import HostResult, HostStatus, StageResult, StepResult
from picluster.remote.stage import DEFAULT_COMMAND_TIMEOUT, run_host, run_stage
from picluster.remote.step import AnyStep, Change, Decision, Ok, ProbeOutput, StepError
from picluster.remote.target import HostLike

H = TypeVar("H", bound=HostLike)
F = TypeVar("F")

#: The result row of the work a stage does on the controller itself.
CONTROLLER = "controller"


@dataclass(frozen=True)
class RunOptions:
    """What the user asked of this run, given to every phase (never through the environment)."""

    limit: frozenset[str] | None = None     # the hosts named by --limit; None: all
    dry_run: bool = False
    parallel: int = 10
    airgap: Path | None = None              # a K3S air-gap bundle directory
    kubeconfig: Path | None = None          # where the cluster's kubeconfig is (or goes)
    progress: bool = False                  # long waits may draw their own progress
    releases: tuple[str, ...] | None = None  # the apps stage: only these Helm releases
    releases_only: bool = False             # the apps stage: no host phase, only the releases
    host_timeout: float = DEFAULT_HOST_TIMEOUT  # seconds of silence after which a host is unreachable

    def selected(self, name: str) -> bool:
        """Return whether this run covers the host `name`."""
        return self.limit is None or name in self.limit


@dataclass(frozen=True)
class HostPhase(Generic[H]):
    """Steps on each host of the stage, all hosts at once (`applies` narrows the hosts)."""

    name: str
    plan: Callable[[H], Sequence[AnyStep]]
    applies: Callable[[H], bool] = lambda host: True


class ControllerStep(Protocol[F]):
    """Work on the controller: `facts` reads (I/O allowed), `decide` is pure, `act` does the change."""

    @property
    def name(self) -> str:
        """Return a short label, such as ``rolling upgrade``."""
        ...

    def facts(self, ctx: ControllerContext) -> F:
        """Read what the decision needs: the API, files here, probes on hosts (`ctx.read`)."""
        ...

    def decide(self, facts: F) -> Decision:
        """Return `Ok` with the reason, or `Change` with what will be done; no I/O."""
        ...

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """Do the change; return what was done (shown as the step's diff); raise StepError with why not."""
        ...


@dataclass(frozen=True)
class ControllerPhase:
    """Work on the controller: `run` returns its step results (see `controller_steps` for the usual kind)."""

    name: str
    run: Callable[[ControllerContext], list[StepResult]]


def controller_steps(name: str, *steps: ControllerStep[Any]) -> ControllerPhase:
    """Return a controller phase that runs `steps` in order; the first that fails ends the phase."""
    def run(ctx: ControllerContext) -> list[StepResult]:
        results: list[StepResult] = []
        for step in steps:
            results.append(run_controller_step(ctx, step))
            if ctx.on_step is not None:
                ctx.on_step(results[-1])
            if results[-1].status == "failed":
                break
        return results

    return ControllerPhase(name, run)


Phase = HostPhase[Any] | ControllerPhase


@dataclass
class Connecting:
    """How the runner reaches hosts: timeouts and the SSH configuration."""

    timeout: float = DEFAULT_TIMEOUT
    command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT
    config: Config | None = None
    first_contact: bool = False
    host_timeout: float = DEFAULT_HOST_TIMEOUT


@dataclass
class ResultTable:
    """One row per host, in order, plus the controller's row; rows merge across phases."""

    order: list[str]
    rows: dict[str, HostResult] = field(default_factory=dict)

    def add(self, result: HostResult) -> None:
        """Merge `result` into its host's row: steps appended, the worst status and the last message kept."""
        row = self.rows.get(result.host)
        if row is None:
            self.rows[result.host] = result
            if result.host not in self.order:
                self.order.append(result.host)
            return
        row.steps.extend(result.steps)
        row.duration += result.duration
        row.status = _worst(row.status, result.status)
        row.message = result.message or row.message
        row.needs_reboot = row.needs_reboot or result.needs_reboot

    def failed(self, name: str) -> bool:
        """Return whether the host's row failed (or it was unreachable)."""
        row = self.rows.get(name)
        return row is not None and row.status in ("failed", "unreachable")

    @property
    def any_failed(self) -> bool:
        """Return whether any row failed."""
        return any(self.failed(name) for name in self.rows)

    def results(self) -> list[HostResult]:
        """Return the rows in order."""
        return [self.rows[name] for name in self.order if name in self.rows]


_RANK: Mapping[HostStatus, int] = {"ok": 0, "changed": 1, "failed": 2, "unreachable": 3}


def _worst(a: HostStatus, b: HostStatus) -> HostStatus:
    return a if _RANK[a] >= _RANK[b] else b


def status_of(steps: Sequence[StepResult]) -> HostStatus:
    """Return a row's status from its steps: failed, changed or ok."""
    statuses = {s.status for s in steps}
    return "failed" if "failed" in statuses else "changed" if "changed" in statuses else "ok"


@dataclass
class ControllerContext:
    """What a controller step gets: the run's options, its hosts, their results so far, and host access."""

    options: RunOptions
    hosts: Sequence[HostLike]
    table: ResultTable
    connecting: Connecting = field(default_factory=Connecting)
    on_step: Callable[[StepResult], None] | None = None   # told of each step a long phase finishes

    def host(self, name: str) -> HostLike:
        """Return the stage's host called `name` (KeyError when the stage has none)."""
        return next(h for h in self.hosts if h.name == name)

    def read(self, host: HostLike, probes: Mapping[str, str]) -> dict[str, ProbeOutput]:
        """Run read-only probes on `host` in one round trip; raise StepError when it cannot be asked."""
        try:
            conn = connect(host.ssh, name=host.name, timeout=self.connecting.timeout, config=self.connecting.config,
                           host_timeout=self.connecting.host_timeout)
        except Unreachable as err:
            raise StepError(str(err)) from None
        try:
            ex = Executor(conn, sudo=conn.user != "root", command_timeout=self.connecting.command_timeout)
            return ex.read(probes)
        except CommandFailed as err:
            raise StepError(f"reading facts on {host.name} failed: {err}") from None
        except (EOFError, ConnectionError, TimeoutError, OSError) as err:
            raise StepError(f"{LOST}{host.name}: {type(err).__name__}: {err}") from None
        finally:
            conn.close()

    def run_on(self, host: HostLike, plan: Callable[[Any], Sequence[AnyStep]]) -> HostResult:
        """Run host steps on one host now (its results join its row); raise StepError if they failed."""
        result = run_host(host, plan, dry_run=self.options.dry_run, timeout=self.connecting.timeout,
                          command_timeout=self.connecting.command_timeout, config=self.connecting.config,
                          host_timeout=self.connecting.host_timeout)
        self.table.add(result)
        if result.status in ("failed", "unreachable"):
            failed = result.failed_step
            why = result.message or ""
            if failed is not None and not why:
                why = f"step '{failed.name}': " + (failed.message or (failed.error.stderr_tail if failed.error
                                                                     else "failed"))
            raise StepError(f"{host.name}: {why}")
        return result


def run_controller_step(ctx: ControllerContext, step: ControllerStep[Any]) -> StepResult:
    """Read the step's facts, decide, and act unless this is a dry run; never raises."""
    start = time.monotonic()
    try:
        decision = step.decide(step.facts(ctx))
        if isinstance(decision, Ok):
            return StepResult(step.name, "skipped" if decision.skipped else "ok", time.monotonic() - start,
                              reason=decision.reason)
        done = decision.diff if ctx.options.dry_run else step.act(ctx, decision)
        return StepResult(step.name, "changed", time.monotonic() - start, diff=done)
    except StepError as err:
        return StepResult(step.name, "failed", time.monotonic() - start, message=str(err))
    except Exception as err:  # NOTE: a broken controller step is reported, like a host's
        return StepResult(step.name, "failed", time.monotonic() - start, message=f"{type(err).__name__}: {err}")


def run_phases(
    name: str,
    hosts: Sequence[H],
    phases: Sequence[Phase],
    options: RunOptions,
    *,
    connecting: Connecting | None = None,
    on_host_done: Callable[[HostResult], None] | None = None,
    on_controller_step: Callable[[StepResult], None] | None = None,
) -> StageResult:
    """Run the stage `name`'s phases in order on `hosts`; return one result table; never raises for a host."""
    start = time.monotonic()
    connecting = connecting or Connecting(host_timeout=options.host_timeout)
    table = ResultTable([h.name for h in hosts])
    host_phases = [i for i, p in enumerate(phases) if isinstance(p, HostPhase)]
    lock = threading.Lock()
    for index, phase in enumerate(phases):
        if isinstance(phase, HostPhase):
            targets = [h for h in hosts if not table.failed(h.name) and phase.applies(h)]
            last = index == host_phases[-1]

            def merge(result: HostResult, last: bool = last) -> None:
                with lock:
                    table.add(result)
                    row = table.rows[result.host]
                if on_host_done is not None and (last or row.status in ("failed", "unreachable")):
                    on_host_done(row)

            if targets:
                run_stage(name, targets, phase.plan, dry_run=options.dry_run, parallel=options.parallel,
                          first_contact=connecting.first_contact, timeout=connecting.timeout,
                          command_timeout=connecting.command_timeout, config=connecting.config,
                          on_host_done=merge, check=False, host_timeout=connecting.host_timeout)
        elif not table.any_failed:
            phase_start = time.monotonic()
            steps = phase.run(ControllerContext(options, hosts, table, connecting, on_step=on_controller_step))
            if steps:
                table.add(HostResult(CONTROLLER, status_of(steps), time.monotonic() - phase_start, steps))
    return StageResult(name, options.dry_run, time.monotonic() - start, table.results())
