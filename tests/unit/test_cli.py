"""The command line as a user meets it: real `invoke` processes, exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)


def test_list_shows_namespaced_tasks_with_help() -> None:
    out = invoke("--list")
    assert out.returncode == 0, out.stderr
    assert "inventory.check" in out.stdout and "Validate the inventory" in out.stdout


def test_check_accepts_the_shipped_inventories() -> None:
    for path in ("hosts/inventory.yml", "hosts/lab.yml"):
        out = invoke("inventory.check", "--inventory", path)
        assert out.returncode == 0, out.stderr
        assert "ok: 5 hosts" in out.stdout


@pytest.mark.parametrize("mutation", ["duplicate-ip", "unknown-key", "missing-file"])
def test_bad_inventory_exits_2_with_one_line_and_no_traceback(tmp_path: Path, mutation: str) -> None:
    data = yaml.safe_load((REPO / "hosts/inventory.yml").read_text())
    path = tmp_path / "inv.yml"
    if mutation == "duplicate-ip":
        data["hosts"]["node2"]["ip"] = "10.0.0.11"
    elif mutation == "unknown-key":
        data["cluster"]["domian"] = "x"
    if mutation != "missing-file":
        path.write_text(yaml.safe_dump(data))
    out = invoke("inventory.check", "--inventory", str(path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {path}: ")
    assert "Traceback" not in out.stderr + out.stdout


def test_inventory_comes_from_the_environment(tmp_path: Path) -> None:
    import os
    env = dict(os.environ, PICLUSTER_INVENTORY=str(tmp_path / "absent.yml"))
    out = invoke("inventory.check", env=env)
    assert out.returncode == 2 and "absent.yml: no such inventory file" in out.stderr


def test_doctor_and_the_json_options_are_listed() -> None:
    out = invoke("--list")
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:1] == ["doctor"] for line in out.stdout.splitlines())
    for task in ("versions", "inventory.show", "check", "cluster.status", "doctor"):
        shown = invoke("--help", task)
        assert shown.returncode == 0 and "--json" in shown.stdout, (task, shown.stderr)
