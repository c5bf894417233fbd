"""Show stage results as rich tables (with each step's reason or diff in verbose mode) and as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picluster.localfs import write_atomic
from picluster.remote.results import HostResult, StageResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold magenta", "skipped": "cyan"}


def stage_table(result: StageResult) -> Table:
    """Return a table with one row per host: step counts, unreachable, duration and a note."""
    from rich.table import Table
    from rich.text import Text

    title = f"stage {result.stage}" + (" (dry run: changed = would change)" if result.dry_run else "")
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    for column in ("changed", "ok", "skipped", "failed", "unreachable"):
        table.add_column(column, justify="right")
    table.add_column("duration", justify="right")
    table.add_column("note")
    for h in result.hosts:
        counts = h.counts()
        failed = counts["failed"] or int(h.status == "failed")
        note = "needs reboot" if h.needs_reboot else ""
        if h.status in ("failed", "unreachable"):
            note = f"step {h.failed_step.name}" if h.failed_step else h.message.split(";")[0]
        table.add_row(
            Text(h.host, style=STYLE[h.status]),
            str(counts["changed"]),
            str(counts["ok"]),
            str(counts["skipped"]),
            str(failed),
            str(int(h.status == "unreachable")),
            f"{h.duration:.1f}s",
            Text(note),
        )
    return table


def host_lines(h: HostResult) -> Iterator[Text]:
    """Yield the verbose lines for one host: its status, then each step's reason, diff or error."""
    from rich.text import Text

    yield Text.assemble((h.host, "bold"), " ", (h.status, STYLE[h.status]))
    if h.message:
        yield Text(f"  {h.message}")
    for step in h.steps:
        reason = f": {step.reason}" if step.reason else ""
        yield Text.assemble("  ", (step.status, STYLE[step.status]), f" {step.name} ({step.duration:.2f}s){reason}")
        for line in step.diff.splitlines():
            yield Text(f"      {line}")
        if step.error is not None:
            yield Text(f"      command: {step.error.command}")
            yield Text(f"      exit code {step.error.exit_code}; stderr: {step.error.stderr_tail}")
        if step.message:
            yield Text(f"      {step.message}")


def print_stage(result: StageResult, *, verbose: bool = False, console: Console | None = None) -> None:
    """Print the stage table; with `verbose`, then every host's steps with their reason or diff."""
    from picluster.console import make_console, print_table

    out = console or make_console()
    print_table(out, stage_table(result))
    if verbose:
        for h in result.hosts:
            for line in host_lines(h):
                out.print(line, highlight=False)


def write_json(path: str | Path, results: Sequence[StageResult]) -> None:
    """Write the results (per stage, host and step: status, reason, diff, duration) as JSON."""
    write_report(path, {"stages": [r.to_dict() for r in results]})


def write_report(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write `data` as JSON atomically: a reader never sees half a report."""
    write_atomic(Path(path), json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", 0o600)
