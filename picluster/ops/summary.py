"""How `cluster.up` shows itself: a progress bar per stage, then a stage × host summary table."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from picluster.console import is_live, make_console, print_table
from picluster.ops.check import GateResult
from picluster.ops.up import StageOutcome, UpRun
from picluster.remote import SKIPPED, HostResult
from picluster.report import host_lines
from picluster.stages import Stage

STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "skipped": "dim"}


class HostProgress:
    """A rich progress bar that advances as hosts finish the current stage; where the console cannot redraw
    (a pipe, a CI log), one line per event instead."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console()
        self.live = is_live(self.console)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False, disable=not self.live)
        self.task: TaskID | None = None
        self.stage = ""
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()

    def __enter__(self) -> HostProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.__exit__(kind, value, tb)

    def _line(self, text: str) -> None:
        if not self.live:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def start_stage(self, stage: Stage, hosts: int) -> None:
        self.stage, self.done, self.total = stage.name, 0, hosts
        self.task = self.progress.add_task(f"{stage.name:<10} {stage.summary}", total=hosts)
        self._line(f"{stage.name}: started on {hosts} hosts: {stage.summary}")

    def start_gate(self, gate: str, hosts: int) -> None:
        self.task = self.progress.add_task(f"{'checks':<10} tests/infra/test_{gate}.py on {hosts} hosts", total=None)
        self._line(f"{self.stage}: checks tests/infra/test_{gate}.py on {hosts} hosts")

    def host_done(self, result: HostResult) -> None:
        with self._lock:
            self.done += 1
            if self.task is not None:
                self.progress.advance(self.task)
            self._line(f"{self.stage}: {result.host} {result.status} ({self.done}/{self.total}, "
                       f"{result.duration:.1f}s)")


def skipped_steps(result: HostResult) -> list[str]:
    """Steps this host could not do here ("name: why"), as the runner reported them."""
    return [f"{s.name}: {s.reason.removeprefix(SKIPPED)}" for s in result.steps if s.status == "skipped"]


def _cell(result: HostResult | None) -> str:
    if result is None:
        return "[dim]skipped[/dim]"
    style = STATUS_STYLE[result.status]
    changed = result.counts()["changed"]
    word = "unreach" if result.status == "unreachable" else result.status
    extra = f" {changed}" if result.status == "changed" else ""
    skips = len(skipped_steps(result))
    note = f" [dim]+{skips} skip[/dim]" if skips else ""
    return f"[{style}]{word}{extra}[/{style}]{note}"


def _table(run: UpRun) -> Table:
    """One row per host, one column per stage, and the host's total time."""
    hosts: list[str] = []
    for o in run.outcomes:
        hosts += [h for h in o.hosts if h not in hosts]
    table = Table(title="cluster.up (dry run: nothing was changed)" if run.dry_run else "cluster.up")
    table.add_column("host")
    for o in run.outcomes:
        table.add_column(o.stage.name)
    table.add_column("time", justify="right", no_wrap=True)
    for h in hosts:
        cells, total = [], 0.0
        for o in run.outcomes:
            by_host = {r.host: r for r in o.result.hosts} if o.result else {}
            cells.append(_cell(by_host.get(h)) if h in o.hosts else "")
            total += by_host[h].duration if h in by_host else 0.0
        table.add_row(h, *cells, f"{total:.1f}s")
    return table


def _print_skips(console: Console, o: StageOutcome) -> None:
    """Why the stage was skipped, and each step skipped on some hosts (one line per step, naming them)."""
    if o.skipped:
        console.print(f"[dim]{o.stage.name}: skipped: {o.skipped}[/dim]", highlight=False)
    skips: dict[str, list[str]] = {}
    for r in o.result.hosts if o.result else []:
        for line in skipped_steps(r):
            skips.setdefault(line, []).append(r.host)
    for line, on in skips.items():
        console.print(f"[yellow]{o.stage.name}: skipped step on {', '.join(on)}:[/yellow] {line}", highlight=False)


def _print_gate(console: Console, stage: str, g: GateResult) -> None:
    """The stage's checks: the counts, then each failure (or the output's tail when none was parsed)."""
    style = "green" if g.ok else "red"
    console.print(f"[{style}]{stage} checks (tests/infra/test_{g.gate}.py): {g.passed} passed, "
                  f"{g.failed} failed, {g.skipped} skipped[/{style}] [dim]{g.duration:.1f}s[/dim]",
                  highlight=False)
    for line in g.failures:
        console.print(f"  {line}", highlight=False, markup=False)
    if not g.ok and not g.failures:
        for line in g.output.strip().splitlines()[-15:]:
            console.print(f"  {line}", highlight=False, markup=False)


def print_up(run: UpRun, *, verbose: bool = False, console: Console | None = None) -> None:
    """Print a host × stage table, why stages were skipped, every failure in full, and (verbose) each step."""
    console = console or make_console()
    print_table(console, _table(run))
    for o in run.outcomes:
        _print_skips(console, o)
        if o.gate is not None:
            _print_gate(console, o.stage.name, o.gate)
    for o in run.outcomes:
        for r in o.result.hosts if o.result else []:
            _print_host(console, o.stage.name, r, verbose)


def _print_host(console: Console, stage: str, r: HostResult, verbose: bool) -> None:
    """Failed and unreachable hosts always, every host with `verbose`: status, then each step."""
    if verbose or r.status in ("failed", "unreachable"):
        console.print(f"[bold]{stage}[/bold]", end=" ")
        for line in host_lines(r):
            console.print(line, highlight=False)
