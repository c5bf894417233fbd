"""The k3s stage for real against the lab (marker `lab`; Linux, root).

One lab for the module, from $PICLUSTER_LAB_INVENTORY (default hosts/lab.yml). `cluster.up --only os,k3s`
runs the stage for real up to the install: config.yaml, kubelet.config, the token file (0600, from a secrets
store made for the test) and the graceful-shutdown check against the nodes' real logind. The lab has no
internet: unless $PICLUSTER_K3S_AIRGAP names an air-gap bundle, the install, the service and the cluster
steps are explicit skips whose reason the nodes' own facts give (no k3s binary, get.k3s.io unreachable), and
so are the gate's k3s checks. With a bundle, K3S is installed for real and the gate checks it fully.
Set PICLUSTER_LAB_KEEP=1 to leave the lab up afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_support import ssh_run

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
INVENTORY = os.environ.get("PICLUSTER_LAB_INVENTORY", str(REPO / "hosts" / "lab.yml"))
AIRGAP = os.environ.get("PICLUSTER_K3S_AIRGAP", "")


@pytest.fixture(scope="module")
def secrets_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


def invoke(home: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CONFIG_HOME=str(home))
    return subprocess.run([INVOKE, "-r", str(REPO), *args], capture_output=True, text=True, timeout=timeout, env=env)


def cluster_up(home: Path, report: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = invoke(home, "cluster.up", "--only", "os,k3s", "--inventory", INVENTORY, "--report", str(report), *extra)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def steps(data: dict[str, Any], stage: str = "k3s") -> list[tuple[str, dict[str, Any]]]:
    found = next(s for s in data["stages"] if s["stage"] == stage)
    return [(h["host"], s) for h in found["hosts"] for s in h["steps"]]


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from picluster.lab.lab import Lab

    the_lab = Lab(INVENTORY)
    the_lab.up()
    try:
        yield the_lab
    finally:
        if not os.environ.get("PICLUSTER_LAB_KEEP"):
            the_lab.down()


@pytest.fixture(scope="module")
def first(lab: Any, secrets_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    proc, data = cluster_up(secrets_home, tmp_path_factory.mktemp("up") / "first.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return data


def test_the_stage_writes_its_files_and_the_gate_passes(lab: Any, first: dict[str, Any], secrets_home: Path) -> None:
    from picluster.stages import k3s

    stage = next(s for s in first["stages"] if s["stage"] == "k3s")
    assert stage["gate"]["ok"], stage["gate"]
    inv = lab.inv
    token = (secrets_home / "picluster" / "secrets" / k3s.token_secret(inv)).read_text()
    for host in inv.select(roles=["server", "agent"]):
        code, text = ssh_run(host, f"sudo cat {k3s.CONFIG}")
        assert (code, text) == (0, k3s.config_yaml(inv, host))
        code, text = ssh_run(host, f"sudo cat {k3s.KUBELET_CONFIG}")
        assert (code, text) == (0, k3s.kubelet_config(inv, host))
        code, text = ssh_run(host, f"sudo stat -c '%a %U %G' {k3s.TOKEN_FILE}; sudo sha256sum {k3s.TOKEN_FILE}")
        assert text.split()[:4] == ["600", "root", "root", hashlib.sha256(token.encode()).hexdigest()]


def test_the_token_never_appears_in_the_report(first: dict[str, Any], secrets_home: Path, lab: Any) -> None:
    from picluster.stages import k3s

    token = (secrets_home / "picluster" / "secrets" / k3s.token_secret(lab.inv)).read_text().strip()
    assert token not in json.dumps(first)


def test_install_is_real_with_a_bundle_or_an_explicit_skip_from_the_nodes_facts(first: dict[str, Any]) -> None:
    installs = {host: s for host, s in steps(first) if s["name"].startswith("k3s v")}
    assert len(installs) == 4
    if AIRGAP:
        assert all(s["status"] == "changed" for s in installs.values()), installs
        return
    for host, s in installs.items():
        assert s["status"] == "skipped" and s["reason"].startswith(
            f"skipped: no k3s binary available on {host}: k3s is not installed, no air-gap bundle was given"), s
        assert "https://raw.githubusercontent.com is unreachable from it (curl: " in s["reason"]
    services = [s["reason"] for _, s in steps(first) if s["name"].startswith("service k3s")]
    assert len(services) == 4 and all(r.startswith("skipped: k3s") for r in services)
    cluster = {s["name"]: s["reason"] for host, s in steps(first) if host == "controller"}
    assert cluster["rolling upgrade"] == "skipped: k3s is not running on node1: no cluster to upgrade yet"
    assert cluster["nodes Ready, workers labelled, kubeconfig"] == \
        "skipped: k3s is not running on node1: no API to wait on, no kubeconfig to fetch"


def test_the_gates_k3s_checks_are_skipped_with_the_reason_without_a_binary(first: dict[str, Any]) -> None:
    gate = next(s for s in first["stages"] if s["stage"] == "k3s")["gate"]
    if AIRGAP:
        assert gate["skipped"] <= 3, gate     # only "listed through the first server" on the agents
    else:
        assert gate["skipped"] >= 12 and gate["failed"] == 0, gate


def test_a_logind_delay_below_the_grace_period_is_refused_on_the_node(
        lab: Any, first: dict[str, Any], secrets_home: Path) -> None:
    node2 = lab.inv.hosts["node2"]
    dropin = "/etc/systemd/logind.conf.d/zzzz-test-short-delay.conf"
    ssh_run(node2, f"printf '[Login]\\nInhibitDelayMaxSec=10\\n' | sudo tee {dropin} >/dev/null"
                   " && sudo systemctl restart systemd-logind")
    try:
        proc = invoke(secrets_home, "k3s.apply", "--inventory", INVENTORY, "--limit", "node2", "--no-checks")
        assert proc.returncode == 1, proc.stdout[-3000:]
        said = " ".join((proc.stdout + proc.stderr).split())
        assert "logind InhibitDelayMaxSec is 10s, below shutdownGracePeriod (30s)" in said
    finally:
        ssh_run(node2, f"sudo rm -f {dropin} && sudo systemctl restart systemd-logind")
    proc = invoke(secrets_home, "k3s.apply", "--inventory", INVENTORY, "--limit", "node2", "--no-checks")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_second_run_changes_nothing(lab: Any, first: dict[str, Any], secrets_home: Path, tmp_path: Path) -> None:
    proc, data = cluster_up(secrets_home, tmp_path / "second.json")
    assert proc.returncode == 0, proc.stdout[-4000:]
    changed = [f"{stage}/{host}/{s['name']}" for stage in ("os", "k3s") for host, s in steps(data, stage)
               if s["status"] == "changed"]
    assert changed == []
