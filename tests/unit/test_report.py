"""The stage table, the verbose step lines and the JSON report."""

from __future__ import annotations

import datetime
import io
import json
import stat
from pathlib import Path

from rich.console import Console

from picluster.console import make_console
from picluster.remote import CommandError, HostResult, StageResult, StepResult
from picluster.report import print_stage, write_json, write_report


def stage() -> StageResult:
    return StageResult(
        "os",
        dry_run=False,
        duration=3.2,
        hosts=[
            HostResult(
                "node1",
                "changed",
                1.5,
                [
                    StepResult("sysctl net.ipv4.ip_forward", "ok", 0.1, reason="sysctl net.ipv4.ip_forward is 1"),
                    StepResult("file /etc/hostname", "changed", 0.2, diff="-old\n+[bold]node1[/bold]"),
                ],
                needs_reboot=True,
            ),
            HostResult(
                "node2",
                "failed",
                0.7,
                [
                    StepResult(
                        "apt nfs-common",
                        "failed",
                        0.4,
                        error=CommandError("apt-get install nfs-common", 100, "E: Unable to locate package"),
                    )
                ],
            ),
            HostResult("node3", "unreachable", 10.0, message="node3: cannot reach 192.0.2.9:22 (timed out); check"),
        ],
    )


def render(verbose: bool) -> str:
    console = Console(record=True, width=160, color_system=None)
    print_stage(stage(), verbose=verbose, console=console)
    return console.export_text()


def test_table_has_one_row_per_host_with_counts_and_duration() -> None:
    text = render(verbose=False)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in text.splitlines()
            if line.startswith("│") and "node" in line}
    assert rows["node1"] == ["1", "1", "0", "0", "0", "1.5s", "needs reboot"]
    assert rows["node2"] == ["0", "0", "0", "1", "0", "0.7s", "step apt nfs-common"]
    assert rows["node3"] == ["0", "0", "0", "0", "1", "10.0s", "node3: cannot reach 192.0.2.9:22 (timed out)"]
    assert "stage os" in text and "sysctl net.ipv4.ip_forward is 1" not in text


def test_verbose_lists_reasons_diffs_and_errors_verbatim() -> None:
    text = render(verbose=True)
    assert "  ok sysctl net.ipv4.ip_forward (0.10s): sysctl net.ipv4.ip_forward is 1" in text
    assert "      +[bold]node1[/bold]" in text  # host data is never read as markup
    assert "      exit code 100; stderr: E: Unable to locate package" in text


def test_json_report_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json(path, [stage()])
    data = json.loads(path.read_text())
    (os_stage,) = data["stages"]
    assert os_stage["stage"] == "os"
    assert [h["status"] for h in os_stage["hosts"]] == ["changed", "failed", "unreachable"]
    step = os_stage["hosts"][0]["steps"][0]
    assert step == {
        "name": "sysctl net.ipv4.ip_forward",
        "status": "ok",
        "duration": 0.1,
        "reason": "sysctl net.ipv4.ip_forward is 1",
        "diff": "",
        "commands": [],
        "error": None,
        "message": "",
    }
    assert os_stage["hosts"][1]["steps"][0]["error"]["exit_code"] == 100


def test_a_report_replaces_the_last_one_whole_in_a_folder_made_for_it(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "report.json"
    write_report(path, {"run": "first"})
    write_report(str(path), {"run": "second", "host": "nodo-ñ", "when": datetime.date(2024, 5, 1)})
    assert path.read_text(encoding="utf-8") == (
        '{\n  "run": "second",\n  "host": "nodo-ñ",\n  "when": "2024-05-01"\n}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_stage_table_never_cuts_a_note() -> None:
    note = "node3: cannot reach 192.0.2.9:22 (timed out)"
    piped = io.StringIO()
    print_stage(stage(), console=make_console(file=piped, environ={}))
    assert any(note in line and "10.0s" in line for line in piped.getvalue().splitlines())
    for width in (70, 40):
        tty = Tty()
        print_stage(stage(), console=make_console(file=tty, environ={"COLUMNS": str(width), "NO_COLOR": "1"}))
        text = tty.getvalue()
        assert "…" not in text
        for word in note.split():
            assert word in text, (width, word, text)
