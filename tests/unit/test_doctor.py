"""`invoke doctor`: each check's verdict and fix, reachability bounded against a real sshd on 127.0.0.1.

Never against hosts/inventory.yml: its hosts are real hardware that this machine cannot reach.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from picluster.inventory import load_inventory
from picluster.ops.doctor import (
    FAIL,
    OK,
    WARN,
    check_helm,
    check_key,
    check_known_host,
    check_python,
    check_reachable,
    doctor,
    satisfies,
)

if TYPE_CHECKING:
    from conftest import Sshd

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loop_inventory(tmp_path: Path, sshd: Sshd, port2: int | None = None, known: bool = True) -> Path:
    """node1 is the test's sshd; node2 another port (closed unless given) on another loopback address."""
    known_hosts = sshd.known_hosts(tmp_path / "known_hosts") if known else tmp_path / "known_hosts"
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
            "node1": {"role": "server", "ip": "127.0.0.1", "mac": "02:00:00:00:00:01", "boot_disk": "/dev/sda",
                      "vars": {"ssh_port": sshd.ports[0]}},
            "node2": {"role": "agent", "ip": "127.0.0.3", "mac": "02:00:00:00:00:02", "boot_disk": "/dev/sda",
                      "vars": {"ssh_port": port2 or closed_port()}},
        },
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.3 that accepts connections and never says a word (a hung sshd)."""
    server = socket.socket()
    server.bind(("127.0.0.3", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for s in held:
        s.close()
    server.close()


def fake_helm(tmp_path: Path, version: str) -> dict[str, str]:
    """An environment whose PATH starts with a `helm` that says `version`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helm = bin_dir / "helm"
    helm.write_text(f"#!/bin/sh\necho {version}\n")
    helm.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


# --- the controller's checks ---------------------------------------------------------------------------


def test_python_against_requires_python() -> None:
    assert satisfies((3, 11, 7), ">=3.11") and satisfies((3, 12, 0), ">=3.11,<4")
    assert not satisfies((3, 10, 12), ">=3.11") and not satisfies((4, 0, 0), ">=3.11,<4")
    assert check_python((3, 11, 2), ">=3.11").status == OK
    old = check_python((3, 10, 12), ">=3.11")
    assert old.status == FAIL and "3.10.12" in old.detail and ">=3.11" in old.fix


def test_helm_missing_is_to_fix_for_a_cluster_a_warning_for_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    from picluster.ops import doctor as module

    monkeypatch.setattr(module, "_managed_helm", lambda: "")  # a helm of PATH, that nothing installs for us
    missing = check_helm("v3.6.3", required=True, found="not installed")
    assert missing.status == FAIL and "v3.6.3" in missing.fix and "helm.sh" in missing.fix
    assert check_helm("v3.6.3", required=False, found="not installed").status == WARN
    assert check_helm("v3.6.3", required=True, found="v3.6.3+gd506314").status == OK
    other = check_helm("v3.6.3", required=True, found="v3.14.0+g3fc9f4b")
    assert other.status == WARN and "pins v3.6.3" in other.detail
    # where the apps stage installs its pinned helm itself, a missing one is a warning that says so
    monkeypatch.setattr(module, "_managed_helm", lambda: "the apps stage installs the pinned build at X")
    managed = check_helm("v3.6.3", required=True, found="not installed")
    assert managed.status == WARN and "installs the pinned build at X" in managed.detail


def test_the_ssh_key_must_exist_be_private_and_be_the_private_half(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    assert check_key(key, ["node1"]).status == FAIL and "ssh-keygen" in check_key(key, ["node1"]).fix
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert check_key(key, ["node1"]).status == OK
    key.chmod(0o644)
    loose = check_key(key, ["node1"])
    assert loose.status == FAIL and loose.fix == f"chmod 600 {key}"
    public = check_key(key.with_suffix(".pub"), ["node1"])
    assert public.status == FAIL and "not a private key" in public.detail
    assert check_key(None, ["node1"]).status == OK  # the agent and ~/.ssh/config decide


def test_known_hosts_entry_per_host_and_port(tmp_path: Path, sshd: Sshd) -> None:
    inv = load_inventory(loop_inventory(tmp_path, sshd))
    node1, node2 = inv.hosts["node1"], inv.hosts["node2"]
    pinned = check_known_host(node1)
    assert pinned.status == OK and f"[127.0.0.1]:{sshd.ports[0]}" in pinned.detail
    missing = check_known_host(node2)
    assert missing.status == FAIL
    assert f"ssh-keyscan -p {node2.ssh.port} 127.0.0.3 >> {tmp_path / 'known_hosts'}" in missing.fix
    absent = check_known_host(node1, tmp_path / "nowhere")
    assert absent.status == FAIL and "no known_hosts file" in absent.detail


# --- reachability --------------------------------------------------------------------------------------


def test_reachability_logs_in_with_the_pinned_key_and_names_the_silent_host(tmp_path: Path, sshd: Sshd) -> None:
    inv = load_inventory(loop_inventory(tmp_path, sshd))
    found = {f.subject: f for f in check_reachable(list(inv.hosts.values()), timeout=3)}
    assert found["node1"].status == OK and "answers" in found["node1"].detail
    assert found["node2"].status == FAIL and "cannot reach 127.0.0.3" in found["node2"].detail


def test_reachability_is_bounded_by_the_timeout(tmp_path: Path, sshd: Sshd, silent_port: int) -> None:
    inv = load_inventory(loop_inventory(tmp_path, sshd, port2=silent_port))
    start = time.monotonic()
    found = {f.subject: f for f in check_reachable(list(inv.hosts.values()), timeout=1)}
    assert time.monotonic() - start < 6
    assert found["node1"].status == OK and found["node2"].status == FAIL


def test_an_invalid_inventory_is_the_finding_and_hosts_are_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("cluster: {}\n")
    run = doctor(path, reachability="not asked")
    inventory = next(f for f in run.findings if f.check == "inventory")
    assert inventory.status == FAIL and str(path) in inventory.detail
    assert [f.check for f in run.findings][-1] == "hosts"


# --- the task ------------------------------------------------------------------------------------------


def run_doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, "doctor", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=env)


def test_doctor_says_what_to_fix_and_exits_1(tmp_path: Path, sshd: Sshd) -> None:
    inventory = loop_inventory(tmp_path, sshd)
    out = run_doctor("--inventory", str(inventory), "--timeout", "2", env=fake_helm(tmp_path, "v3.6.3+gd506314"))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("to fix: known_hosts node2: pin it: `ssh-keyscan") for line in lines), out.stdout
    assert any(line.startswith("to fix: reachable node2: node2: cannot reach 127.0.0.3:") and
               line.endswith("its address in the inventory.") for line in lines), out.stdout
    assert lines[-1] == "doctor: 2 to fix, 0 warnings"
    assert "Traceback" not in out.stderr


def test_doctor_passes_when_everything_is_in_place(tmp_path: Path, sshd: Sshd) -> None:
    inventory = loop_inventory(tmp_path, sshd)
    data = yaml.safe_load(inventory.read_text())
    del data["hosts"]["node2"]  # sshd listens on 127.0.0.1 only, and each host needs its own address
    inventory.write_text(yaml.safe_dump(data))
    out = run_doctor("--inventory", str(inventory), "--json", env=fake_helm(tmp_path, "v3.6.3+gd506314"))
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["to_fix"] == 0
    statuses = {(f["check"], f["subject"]): f["status"] for f in report["findings"]}
    assert statuses[("reachable", "node1")] == OK and statuses[("known_hosts", "node1")] == OK
    assert statuses[("helm", "helm")] == OK


def test_doctor_offline_and_bad_options(tmp_path: Path, sshd: Sshd) -> None:
    inventory = loop_inventory(tmp_path, sshd)
    out = run_doctor("--inventory", str(inventory), "--offline", "--json", env=fake_helm(tmp_path, "v3.6.3"))
    report = json.loads(out.stdout)
    assert {"check": "reachable", "subject": "all hosts", "status": "skip", "detail": "not asked (--offline)",
            "fix": ""} in report["findings"]
    bad = run_doctor("--inventory", str(inventory), "--timeout", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --timeout must be more than 0 and at most 60 seconds"]
