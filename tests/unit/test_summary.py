"""What cluster.up prints: the host × stage table, skipped stages and steps, and failures in full."""

from __future__ import annotations

from rich.console import Console

from picluster.ops.summary import print_up, skipped_steps
from picluster.ops.up import StageOutcome, UpRun
from picluster.remote import CommandError, HostResult, StageResult, StepResult
from picluster.stages import PREFLIGHT, STAGES


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
