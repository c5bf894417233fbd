"""What cluster.up prints: the host × stage table, skipped stages and steps, and failures in full."""

from __future__ import annotations

import io

from rich.console import Console

from picluster.console import make_console
from picluster.ops.summary import HostProgress, print_up, skipped_steps
from picluster.ops.up import StageOutcome, UpRun
from picluster.remote import CommandError, HostResult, StageResult, StepResult
from picluster.stages import PREFLIGHT, STAGES


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def render(run: UpRun, verbose: bool = False) -> str:
    console = Console(record=True, width=140, color_system=None)
    print_up(run, verbose=verbose, console=console)
    return console.export_text()


def a_run() -> UpRun:
    skip = StepResult("apt fluent-bit", "skipped", 0.1, reason="skipped: its vendor repository is not reachable")
    ok = StepResult("cloud-init finished", "ok", 0.2, reason="cloud-init done")
    boom = StepResult("apt chrony", "failed", 1.0, message="apt-get failed",
                      error=CommandError("apt-get install -y chrony", 100, "E: Unable to locate package chrony"))
    preflight = StageOutcome(PREFLIGHT, ["gateway", "node1"], StageResult("preflight", False, 1.0, [
        HostResult("gateway", "ok", 0.5, [ok]), HostResult("node1", "ok", 0.5, [ok])]))
    os_stage = StageOutcome(STAGES[0], ["gateway", "node1"], StageResult("os", False, 2.0, [
        HostResult("gateway", "ok", 1.0, [skip]), HostResult("node1", "failed", 1.0, [boom])]))
    later = StageOutcome(STAGES[2], ["node1"], skipped="stage os failed")
    return UpRun(dry_run=False, outcomes=[preflight, os_stage, later])


def test_skipped_steps_follow_the_reason_convention() -> None:
    host = a_run().outcomes[1].result.hosts[0]  # type: ignore[union-attr]
    assert skipped_steps(host) == ["apt fluent-bit: its vendor repository is not reachable"]


def test_table_skips_and_failures_are_all_shown() -> None:
    text = render(a_run())
    assert "gateway" in text and "node1" in text
    assert "ok +1 skip" in text
    assert "os: skipped step on gateway: apt fluent-bit: its vendor repository is not reachable" in text
    assert "k3s: skipped: stage os failed" in text
    assert "command: apt-get install -y chrony" in text and "exit code 100" in text
    assert "E: Unable to locate package chrony" in text
    assert "cloud-init done" not in text  # reasons of ok steps only with --verbose
    assert "cloud-init done" in render(a_run(), verbose=True)


def wide_run() -> UpRun:
    """Every stage, on hosts whose names and cells are too wide for 80 columns."""
    skip = StepResult("apt fluent-bit", "skipped", 0.1, reason="skipped: its vendor repository is not reachable")
    changed = StepResult("file /etc/hosts", "changed", 0.1)
    names = [f"node{i}-with-a-long-name-from-the-inventory" for i in range(1, 4)]
    outcomes = [StageOutcome(s, names, StageResult(s.name, False, 1.0, [
        HostResult(n, "changed", 12.5, [changed] * 7 + [skip] * 2) for n in names])) for s in (PREFLIGHT, *STAGES)]
    return UpRun(dry_run=False, outcomes=outcomes)


def test_off_a_terminal_the_summary_keeps_every_stage_and_cell_whole() -> None:
    out = io.StringIO()
    print_up(wide_run(), console=make_console(file=out, environ={}))
    text = out.getvalue()
    assert "…" not in text and "\x1b[" not in text
    header = next(line for line in text.splitlines() if " preflight " in line)
    for stage in (PREFLIGHT, *STAGES):
        assert f" {stage.name} " in header
    rows = [line for line in text.splitlines() if line.startswith("│ node")]
    assert len(rows) == 3 and all(row.count("changed 7 +2 skip") == 1 + len(STAGES) for row in rows)


def test_on_a_narrow_terminal_the_summary_wraps_or_lists_but_never_cuts() -> None:
    for width in (100, 50):
        out = Tty()
        print_up(wide_run(), console=make_console(file=out, environ={"COLUMNS": str(width), "NO_COLOR": "1"}))
        text = out.getvalue()
        assert "…" not in text
        for i in range(1, 4):
            assert f"node{i}-with-a-long-name-from-the-inventory" in text
        assert "changed 7 +2 skip" in text or ("changed 7" in text and "+2 skip" in text)


def test_progress_off_a_terminal_is_one_line_per_event() -> None:
    out = io.StringIO()
    console = make_console(file=out, environ={})
    run = wide_run()
    with HostProgress(console) as progress:
        progress.start_stage(STAGES[0], 2)
        for h in run.outcomes[1].result.hosts[:2]:  # type: ignore[union-attr]
            progress.host_done(h)
        progress.start_gate("os", 2)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"os: started on 2 hosts: {STAGES[0].summary}"
    assert lines[1] == "os: node1-with-a-long-name-from-the-inventory changed (1/2, 12.5s)"
    assert lines[2] == "os: node2-with-a-long-name-from-the-inventory changed (2/2, 12.5s)"
    assert lines[3] == "os: checks tests/infra/test_os.py on 2 hosts"
    assert len(lines) == 4  # no bar drawn at the end
