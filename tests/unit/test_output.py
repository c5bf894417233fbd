"""Output read in a pipe, a CI log or a narrow terminal: every value whole, colours only when asked for.

The tasks run as real `invoke` processes with stdout piped, as `invoke versions | cat` or a CI job runs them.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from rich.table import Table

from picluster.console import BROKEN_PIPE, make_console, print_table
from picluster.versions import load_versions

if TYPE_CHECKING:
    from conftest import Sshd

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Host names long enough that no 80-column layout could show them beside the stage columns.
LONG_UP = "node-one-has-a-name-long-enough-to-need-a-wide-column"
LONG_DOWN = "node-two-has-a-name-long-enough-to-need-a-wide-column"


def piped(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `invoke ARGS` with stdout and stderr piped (no terminal), in an environment without colour hints."""
    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TTY_COMPATIBLE")}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**base, **env})


class Tty(io.StringIO):
    """A terminal of a given width, as far as the console can tell."""

    def isatty(self) -> bool:
        return True


def test_piped_versions_shows_every_column_and_every_cell_whole() -> None:
    out = piped("versions")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "…" not in out.stdout and not ANSI.search(out.stdout)
    header = next(line for line in lines if "Software" in line)
    for column in ("Type", "Software", "Version", "Helm chart", "Notes"):
        assert column in header
    for row in load_versions().release:
        # each row on one line, with its type, name, version and notes whole
        assert any(row.type in line and row.software in line and f" {row.version} " in line and row.notes in line
                   for line in lines), row
    assert "RELEASE.2022-05-04T07-45-27Z" in out.stdout
    assert "prometheus-node-exporter-3.3.1 (via kube-prometheus-stack)" in out.stdout


def test_piped_versions_repos_keeps_urls_whole() -> None:
    out = piped("versions", "--repos")
    assert out.returncode == 0, out.stderr
    v = load_versions()
    for b in v.binaries.values():
        assert b.url("arm64") in out.stdout
    for name, url in v.repos.items():
        assert any(name in line and url in line for line in out.stdout.splitlines())
    assert "K3S-bundled: v1.4 keeps the Traefik K3S ships" in out.stdout


def test_colours_only_when_forced_and_never_against_no_color() -> None:
    assert not ANSI.search(piped("versions").stdout)
    forced = piped("versions", FORCE_COLOR="1")
    assert ANSI.search(forced.stdout)
    assert "RELEASE.2022-05-04T07-45-27Z" in ANSI.sub("", forced.stdout)  # forced colour, still whole
    assert not ANSI.search(piped("versions", FORCE_COLOR="1", NO_COLOR="1").stdout)


def test_release_table_marks_the_reference_only_rows_and_shows_our_controller() -> None:
    out = piped("versions")
    ansible = next(line for line in out.stdout.splitlines() if "Ansible" in line and "2.12.1" in line)
    assert "reference only" in ansible
    for component in ("Python", "Invoke", "Fabric", "kubernetes client", "Helm"):
        assert any(line.startswith(f"│ {component} ") for line in out.stdout.splitlines()), component
    python = next(line for line in out.stdout.splitlines() if line.startswith("│ Python "))
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in python and ">=3.11" in python


def test_versions_json() -> None:
    out = piped("versions", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["k3s"] == load_versions().k3s
    rows = {r["software"]: r for r in data["release"]}
    assert rows["Ansible"]["reference_only"] is True and rows["K3S"]["reference_only"] is False
    assert rows["Minio"]["version"] == "RELEASE.2022-05-04T07-45-27Z"
    controller = {c["name"]: c for c in data["controller"]}
    assert controller["Invoke"]["pinned"] == ">=2.2,<3"
    assert controller["Helm"]["pinned"] == rows["Helm"]["version"]
    assert data["repos"]["jetstack"]["charts"] == ["cert-manager-v1.9.1"]


def test_inventory_show_json() -> None:
    out = piped("inventory.show", "--json", "--inventory", "hosts/lab.yml")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["hosts"]) == {"gateway", "node1", "node2", "node3", "node4"}
    assert data["hosts"]["node1"]["role"] == "server" and data["hosts"]["node1"]["ssh"]["port"] == 22


@pytest.mark.parametrize("args", [["inventory.show", "--inventory", "hosts/lab.yml"], ["versions"]])
def test_a_closed_pipe_ends_the_task_quietly(args: list[str]) -> None:
    """`inventory.show | head`: the reader goes away before the task writes."""
    proc = subprocess.Popen([INVOKE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == BROKEN_PIPE


# --- a narrow terminal ---------------------------------------------------------------------------------


def wide_table() -> Table:
    table = Table(title="t")
    for column in ("host", "stage", "note"):
        table.add_column(column, no_wrap=True)
    table.add_row(LONG_UP, "preflight", "cannot reach 127.0.0.3:22 (connection refused)")
    return table


def test_a_narrow_terminal_wraps_cells_at_their_words_instead_of_cutting() -> None:
    tty = Tty()
    console = make_console(file=tty, environ={"COLUMNS": "90", "NO_COLOR": "1"})
    assert console.width == 90
    print_table(console, wide_table())
    text = tty.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 90
    assert LONG_UP in text and "preflight" in text
    for word in "cannot reach 127.0.0.3:22 (connection refused)".split():  # the note wraps, no word is cut
        assert word in text


def test_a_terminal_too_narrow_for_any_table_gets_one_line_per_value() -> None:
    tty = Tty()
    console = make_console(file=tty, environ={"COLUMNS": "40", "NO_COLOR": "1"})
    print_table(console, wide_table())
    lines = tty.getvalue().splitlines()
    assert f"host: {LONG_UP}" in lines
    assert "  stage: preflight" in lines
    assert "  note: cannot reach 127.0.0.3:22 (connection refused)" in lines


# --- cluster.up and cluster.status, piped, against a real sshd on 127.0.0.1 ------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def long_names_inventory(tmp_path: Path, sshd: Sshd) -> Path:
    """One host is the test's sshd, the other a closed port; both with names too long for 80 columns."""
    known_hosts = sshd.known_hosts(tmp_path / "known_hosts")
    data = {
        "cluster": {
            "name": "loop", "domain": "loop.test",
            "lan": {"cidr": "127.0.0.0/24", "gateway": "127.0.0.254", "dhcp_range": ["127.0.0.32", "127.0.0.99"]},
            "metallb_pool": ["127.0.0.100", "127.0.0.200"], "controller": "127.0.0.2",
            "automation_user": sshd.user,
            "admin_users": [{"name": sshd.user, "ssh_key_files": [str(sshd.client_key) + ".pub"]}],
        },
        "vars": {"ssh_key_file": str(sshd.client_key), "ssh_known_hosts": str(known_hosts)},
        "hosts": {
            LONG_UP: {"role": "server", "ip": "127.0.0.1", "mac": "02:00:00:00:00:01", "boot_disk": "/dev/sda",
                      "vars": {"ssh_port": sshd.ports[0]}},
            LONG_DOWN: {"role": "agent", "ip": "127.0.0.3", "mac": "02:00:00:00:00:02", "boot_disk": "/dev/sda",
                        "vars": {"ssh_port": closed_port()}},
        },
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_piped_cluster_up_shows_every_stage_host_and_reason_whole(tmp_path: Path, sshd: Sshd) -> None:
    inventory = long_names_inventory(tmp_path, sshd)
    # the unreachable host fails preflight, so nothing after it runs: nothing on this machine is changed
    out = piped("cluster.up", "--inventory", str(inventory), "--only", "os")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "…" not in out.stdout and not ANSI.search(out.stdout)
    header = next(line for line in lines if " preflight " in line)
    assert " os " in header and " time " in header
    assert any(LONG_UP in line and " ok " in line for line in lines), out.stdout
    assert any(LONG_DOWN in line and " unreach " in line for line in lines), out.stdout
    assert "os: skipped: stage preflight failed" in lines
    # the unreachable host's reason on one line, whole
    assert any(f"{LONG_DOWN}: cannot reach 127.0.0.3:" in line and "its address in the inventory." in line
               for line in lines), out.stdout
    # progress: one line per event, not a bar
    assert any(line.startswith("preflight: started on 2 hosts") for line in lines)
    assert any(line.startswith(f"preflight: {LONG_DOWN} unreachable (") for line in lines)


def test_piped_cluster_status_and_its_json(tmp_path: Path, sshd: Sshd) -> None:
    inventory = long_names_inventory(tmp_path, sshd)
    out = piped("cluster.status", "--inventory", str(inventory))
    assert out.returncode == 1  # the closed port and the missing k3s are problems
    lines = out.stdout.splitlines()
    assert "…" not in out.stdout
    header = next(line for line in lines if " host " in line)
    for column in ("role", "ssh", "uptime", "k3s service", "k3s", "node", "kubelet", "os"):
        assert f" {column} " in header
    assert any(LONG_DOWN in line and " agent " in line and " no " in line for line in lines), out.stdout
    data = json.loads(piped("cluster.status", "--inventory", str(inventory), "--json").stdout)
    by_name = {h["name"]: h for h in data["hosts"]}
    assert by_name[LONG_UP]["reachable"] is True and by_name[LONG_DOWN]["reachable"] is False
    assert any(p.startswith(f"{LONG_DOWN} does not answer SSH") for p in data["problems"])


@pytest.mark.parametrize("stage", ["preflight"])
def test_check_json(tmp_path: Path, sshd: Sshd, stage: str) -> None:
    inventory = long_names_inventory(tmp_path, sshd)
    out = piped("check", "--inventory", str(inventory), "--stage", stage, "--limit", LONG_UP, "--json")
    data = json.loads(out.stdout)
    (gate,) = data["gates"]
    assert gate["stage"] == stage and gate["hosts"] == [LONG_UP]
    assert data["ok"] is (out.returncode == 0) and gate["ok"] is data["ok"]
    assert gate["passed"] + gate["failed"] + gate["skipped"] > 0


@pytest.mark.parametrize("width", [80, 112, 160])
def test_versions_on_a_terminal_of_any_width_keep_each_version_on_one_line(width: int) -> None:
    from picluster.tasks.versions import _print_release

    tty = Tty()
    _print_release(make_console(file=tty, environ={"COLUMNS": str(width), "NO_COLOR": "1"}), load_versions())
    text = tty.getvalue()
    assert "…" not in text
    listed = "Type: OS" in text.splitlines()  # too narrow for the table: one "column: value" line each
    assert listed is (width == 80)
    if not listed:
        assert max(len(line) for line in text.splitlines()) <= width
    for row in load_versions().release:
        assert row.version in text, (width, row.version)


def test_the_image_progress_is_one_line_per_task_off_a_terminal() -> None:
    import subprocess
    import sys

    script = ("from picluster.stages.image.progress import RichProgress\n"
              "p = RichProgress()\np.start('download', 4096)\np.advance(4096)\np.start('write', 2048)\n"
              "p.advance(1024)\np.advance(1024)\np.finish()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "download: started (4096 bytes)" and lines[2] == "write: started (2048 bytes)"
    assert lines[1].startswith("download: done (4096 bytes in ") and lines[3].startswith("write: done (2048 bytes")
    assert len(lines) == 4 and "\r" not in proc.stderr and "\x1b" not in proc.stderr
