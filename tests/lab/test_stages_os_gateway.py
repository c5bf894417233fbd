"""The os and gateway stages for real against the lab (marker `lab`; Linux, root).

One lab for the module, brought up from $PICLUSTER_LAB_INVENTORY (default hosts/lab.yml) with the
gateway's WAN link (picluster/lab/wan.py) when the inventory names one. In order: the first `cluster.up --only
os,gateway` converges (packages through the lab's apt proxy, one real reboot per node for the cmdline,
gates green, fluent-bit an explicit skip); a second run reports 0 changes; a node killed mid-stage
leaves the others to finish and is reported with what to do; after it is started again a re-run
converges. Set PICLUSTER_LAB_KEEP=1 to leave the lab up afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
INVENTORY = os.environ.get("PICLUSTER_LAB_INVENTORY", str(REPO / "hosts" / "lab.yml"))
STAGES = ("os", "gateway")


def invoke(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, "-r", str(REPO), *args], capture_output=True, text=True, timeout=timeout)


def cluster_up(report: Path, timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = invoke("cluster.up", "--only", ",".join(STAGES), "--inventory", INVENTORY, "--report", str(report),
                  timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, data


def stage(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["stages"] if s["stage"] == name)


def steps(data: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(h["host"], s) for h in stage(data, name)["hosts"] for s in h["steps"]]


def changed(data: dict[str, Any]) -> list[str]:
    return [f"{name}/{host}/{s['name']}" for name in STAGES for host, s in steps(data, name)
            if s["status"] == "changed"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from picluster.lab.lab import Lab

    the_lab = Lab(INVENTORY)
    the_lab.up()  # with the gateway's WAN link when the inventory names one (picluster/lab/wan.py)
    try:
        yield the_lab
    finally:
        if not os.environ.get("PICLUSTER_LAB_KEEP"):
            the_lab.down()


def boots(lab: Any, name: str) -> int:
    from picluster.lab.common import read_json

    return int(read_json(lab.paths(name).run_state).get("boots", 0))


def test_first_run_converges_with_one_reboot_per_node(lab: Any, tmp_path: Path) -> None:
    before = {h.name: boots(lab, h.name) for h in lab.hosts}
    proc, data = cluster_up(tmp_path / "first.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in STAGES:
        assert stage(data, name)["gate"]["ok"], stage(data, name)["gate"]
    boot = "kernel cmdline and gpu_mem, reboot if they changed"
    reboots = [host for host, s in steps(data, "os") if s["name"] == boot and "[reboot if needed]" in s["diff"]]
    assert sorted(reboots) == sorted(h.name for h in lab.hosts)
    waits = {host: s for host, s in steps(data, "os") if s["name"] == "wait for the reboot"}   # the runner's
    assert sorted(waits) == sorted(reboots) and all(s["status"] == "ok" for s in waits.values()), waits
    assert {h.name: boots(lab, h.name) - before[h.name] for h in lab.hosts} == {h.name: 1 for h in lab.hosts}


def test_packages_came_through_the_labs_apt_proxy(lab: Any) -> None:
    log = (lab.proxy_dir / "log" / "apt-cacher.log").read_text(errors="replace")
    for package in ("chrony", "open-iscsi", "dnsmasq", "nftables"):
        assert f"/{package}_" in log, f"{package} was not fetched through the lab's proxy"


def test_dnsmasq_answers_for_every_lab_name(lab: Any) -> None:
    sys.path.insert(0, str(REPO / "tests" / "infra"))
    from test_gateway import dns_a  # type: ignore[import-not-found]

    inv = lab.inv
    gw = str(inv.cluster.lan.gateway)
    names = {f"{h.name}.{inv.cluster.domain}": str(h.ip) for h in inv.hosts.values()}
    names |= {f"{s}.{inv.cluster.domain}": str(ip) for s, ip in inv.cluster.services.items()}
    assert {n: dns_a(gw, n) for n in names} == {n: [a] for n, a in names.items()}


def test_what_the_lab_cannot_do_is_an_explicit_skip(lab: Any, tmp_path: Path) -> None:
    proc, data = cluster_up(tmp_path / "again.json")
    assert proc.returncode == 0, proc.stdout[-4000:]
    reasons = {s["name"]: s["reason"] for _, s in steps(data, "gateway")}
    assert reasons["apt repository fluent-bit"].startswith("skipped: packages.fluentbit.io does not resolve")
    assert reasons["apt fluent-bit"].startswith("skipped: fluent-bit is neither installed nor available")
    node = {s["name"]: s["reason"] for host, s in steps(data, "os") if host != "gateway"}
    assert node["data volume /dev/sda3 at /storage"].startswith("skipped: /dev/sda3 is not a block device")


def test_second_run_reports_zero_changes(lab: Any, tmp_path: Path) -> None:
    proc, data = cluster_up(tmp_path / "second.json")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert changed(data) == []


def _kill_node(lab: Any, name: str) -> None:
    """Power the node off hard: every process in its network namespace (the container with it)."""
    from picluster.lab.measure import node_pids

    for pid in node_pids(lab, name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_node_killed_mid_stage_is_reported_and_the_others_finish(lab: Any, tmp_path: Path) -> None:
    victim = lab.hosts[-1].name
    # Give every node real work (a package to reinstall through the proxy), so the stage is mid-way.
    for h in lab.hosts:
        undo = subprocess.run(lab.ssh_argv(h.name, ["sudo", "-n", "apt-get", "-q", "-y", "remove", "nfs-common"]),
                              capture_output=True, text=True, timeout=300)
        assert undo.returncode == 0, undo.stderr
    report = tmp_path / "killed.json"
    proc = subprocess.Popen([INVOKE, "-r", str(REPO), "os.apply", "--inventory", INVENTORY, "--report", str(report),
                             "--no-checks"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the victim is installing, then pull its plug
        busy = subprocess.run(lab.ssh_argv(victim, ["pgrep", "-x", "apt-get"]), capture_output=True, timeout=30)
        if busy.returncode == 0:
            break
        time.sleep(0.2)
    _kill_node(lab, victim)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, out + err
    data = json.loads(report.read_text())
    hosts = {h["host"]: h for h in data["stages"][0]["hosts"]}
    assert hosts[victim]["status"] == "unreachable", hosts[victim]
    assert hosts[victim]["message"].startswith(f"{victim} stopped answering during step ")
    assert all(h["status"] in ("ok", "changed") for name, h in hosts.items() if name != victim), hosts
    assert f"- {victim}:" in err and "What to do" in err and f"--limit {victim}" in err


def test_after_the_node_is_back_a_rerun_converges(lab: Any, tmp_path: Path) -> None:
    victim = lab.hosts[-1].name
    lab.start(victim)
    proc, _ = cluster_up(tmp_path / "rerun.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    proc, data = cluster_up(tmp_path / "converged.json")
    assert proc.returncode == 0 and changed(data) == []
