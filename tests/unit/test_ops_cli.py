"""The operations' command lines: usage errors exit 2 with one line, before any host is contacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


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


@pytest.mark.parametrize(("args", "message"), [
    (["cluster.shutdown", "--timeout", "0"], "error: --timeout must be more than 0 seconds"),
    (["cluster.shutdown", "--limit", "node9"], "--limit names unknown host(s) node9"),
    (["cluster.reboot", "--limit", "gateway"], "error: no K3S node selected"),
    (["cluster.status"], "error: the lab of"),
    (["cluster.startup", "--ready-timeout", "-1"], "error: --ready-timeout must be more than 0 seconds"),
])
def test_usage_errors_exit_2_with_one_line(absent_lab: Path, args: list[str], message: str) -> None:
    out = invoke(*args, "--inventory", str(absent_lab))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_the_tasks_are_listed_with_their_help() -> None:
    out = invoke("--help", "cluster.shutdown")
    assert out.returncode == 0
    for option in ("--force", "--no-drain", "--keep-gateway", "--limit", "--report", "--kubeconfig"):
        assert option in out.stdout
