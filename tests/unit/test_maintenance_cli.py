"""The maintenance tasks' command lines: listed with help; usage errors exit 2 with one line, before any host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
TASKS = ("cluster.update", "cluster.reset", "k3s.stop", "k3s.start", "node.add", "node.remove", "backup.now",
         "backup.snapshots", "backup.restore", "backup.cluster", "restore.cluster")


def invoke(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=60, input=stdin)


@pytest.fixture
def absent_lab(tmp_path: Path) -> Path:
    """The lab inventory on a bridge that does not exist: every task must refuse to connect."""
    data = yaml.safe_load((REPO / "hosts/lab.yml").read_text())
    data["lab"]["bridge"] = "pcnolab9"
    data["lab"]["state_dir"] = str(tmp_path / "state")
    for key in ("ssh_key_file", "ssh_known_hosts"):
        data["vars"][key] = str(tmp_path / key)
    data["cluster"]["admin_users"][0]["ssh_key_files"] = [str(tmp_path / "key.pub")]
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_maintenance_task_is_listed_with_its_help() -> None:
    out = invoke("--list")
    assert out.returncode == 0, out.stderr
    helps = {}
    for line in out.stdout.splitlines():
        if line.startswith("  ") and len(line.split()) > 1:
            helps[line.split()[0]] = line.split(None, 1)[1]
    assert set(TASKS) <= set(helps), sorted(set(TASKS) - set(helps))
    assert all(helps[name].strip() for name in TASKS)
    shown = invoke("--help", "backup.restore")
    assert shown.returncode == 0 and "--snapshot" in shown.stdout and "--target" in shown.stdout, shown.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["cluster.update", "--ready-timeout", "0"], "error: --ready-timeout must be more than 0 seconds"),
    (["cluster.update", "--limit", "node9"], "node9"),
    (["cluster.update"], "error: the lab of"),
    (["cluster.reset", "--limit", "gateway"], "error: no selected host is a server or agent"),
    (["k3s.stop", "--limit", "gateway"], "error: no selected host is a server or agent"),
    (["k3s.start", "--ready-timeout", "-1"], "error: --ready-timeout must be more than 0 seconds"),
    (["node.add", "gateway"], "error: 'gateway' is not a server or agent"),
    (["node.remove", "gateway"], "error: gateway is the gateway, not a K3S node"),
    (["node.remove", "node1"], "error: node1 is the first server"),
    (["backup.snapshots", "node9"], "has no host 'node9'"),
    (["backup.restore", "node2", "--path", "etc/hosts"], "error: --path must be an absolute path"),
    (["backup.restore", "node2", "--path", "/etc/hosts", "--snapshot", "x;y"], "error: --snapshot must be"),
    (["backup.cluster", "Not_A_Name"], "error: 'Not_A_Name' is not a valid name"),
    (["restore.cluster", "nightly", "--timeout", "0"], "error: --timeout must be more than 0 seconds"),
])
def test_usage_errors_exit_2_with_one_line(absent_lab: Path, args: list[str], message: str) -> None:
    out = invoke(*args, "--inventory", str(absent_lab))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr
