"""The lab itself: real systemd nodes with SSH, cloud-init applied, power semantics, a clean down.

Runs in file order: the last test takes the lab down and asserts that nothing of it is left.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from lab_support import LAB_SKIP, ssh_run

from picluster import cloudinit

if LAB_SKIP:
    pytest.skip(LAB_SKIP, allow_module_level=True)

pytestmark = pytest.mark.lab

# `systemctl is-system-running` on a booted node. "degraded" is accepted: it means some unit failed,
# and in a container some can (a unit that needs a capability or a device the node does not have
# when a later stage installs it); the lab base masks the ones that always fail in nspawn
# (systemd-remount-fs: there is no root device to remount), so a fresh node reports "running".
BOOTED = ("running", "degraded")


def test_every_node_answers_ssh_as_the_cloud_init_admin(running_lab) -> None:
    lab = running_lab
    for host in lab.hosts:
        code, out = ssh_run(host, "hostname; ip -4 -o addr show dev eth0; cat /sys/class/net/eth0/address; "
                                  "systemctl is-system-running; cloud-init status; id -un; "
                                  "sudo -n true && echo sudo-ok")
        assert code == 0, out
        lines = out.split("\n")
        assert lines[0] == host.name, f"{host.name}: cloud-init did not set the hostname: {out}"
        assert f" {host.ip}/24 " in lines[1], f"{host.name}: eth0 lacks {host.ip}/24: {lines[1]}"
        assert lines[2] == host.mac
        assert lines[3] in BOOTED, f"{host.name}: systemd is {lines[3]!r}"
        assert lines[4] == "status: done", f"{host.name}: cloud-init {lines[4]!r}"
        assert lines[5] == lab.inv.cluster.automation_user
        assert lines[6] == "sudo-ok"


def test_nodes_look_like_a_flashed_pi(running_lab) -> None:
    lab = running_lab
    host = lab.host("node1")
    code, out = ssh_run(host, "cat /boot/firmware/cmdline.txt; ls /boot/firmware /var/lib/cloud/seed/nocloud; "
                              "cat /etc/apt/apt.conf.d/01proxy")
    assert code == 0, out
    assert cloudinit.cmdline_txt().strip() in out
    for name in ("config.txt", "cmdline.txt", "user-data", "network-config", "meta-data"):
        assert name in out.split(), f"/boot/firmware/{name} is missing"
    address, port = lab.proxy_address
    assert f'Acquire::http::Proxy "http://{address}:{port}";' in out


def test_packages_come_through_the_lab_proxy(running_lab) -> None:
    code, out = ssh_run(running_lab.host("node2"), "sudo apt-get -q update", timeout=120)
    assert code == 0, out[-500:]
    log = (running_lab.proxy_dir / "log" / "apt-cacher.log")
    assert log.exists() and log.stat().st_size > 0, "the node's apt did not go through apt-cacher-ng"


def test_up_on_a_running_lab_changes_nothing(running_lab) -> None:
    before = {s.name: s.uptime for s in running_lab.status()}
    started = time.monotonic()
    assert running_lab.up() == {}
    assert time.monotonic() - started < 5
    after = running_lab.status()
    assert all(s.state == "running" for s in after)
    assert all(s.uptime >= before[s.name] for s in after), "up restarted a running node"


def _wait_state(lab, name: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {s.name: s.state for s in lab.status()}[name] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} is not {state} after {timeout:.0f}s")


def test_poweroff_stops_the_node_and_start_brings_it_back_with_its_disk(running_lab) -> None:
    lab = running_lab
    host = lab.host("node4")
    code, out = ssh_run(host, "echo survived | sudo tee /var/lib/lab-marker && sync")
    assert code == 0, out
    ssh_run(host, "sudo systemctl poweroff --no-block")
    _wait_state(lab, "node4", "stopped")
    row = {s.name: s for s in lab.status()}["node4"]
    assert row.uptime is None and row.reason == "powered off"
    assert all(s.state == "running" for s in lab.status() if s.name != "node4")
    lab.start("node4", timeout=60)
    _wait_state(lab, "node4", "running")
    code, out = ssh_run(host, "sudo cat /var/lib/lab-marker; hostname")
    assert out.split() == ["survived", "node4"]


def test_reboot_restarts_the_node(running_lab) -> None:
    lab = running_lab
    host = lab.host("node2")
    boots = json.loads(lab.paths("node2").run_state.read_text())["boots"]
    ssh_run(host, "sudo systemctl reboot --no-block")
    deadline = time.monotonic() + 60
    while json.loads(lab.paths("node2").run_state.read_text()).get("boots") == boots:
        assert time.monotonic() < deadline, "node2 did not restart after reboot"
        time.sleep(0.2)
    lab.wait_ssh([host], timeout=60)
    assert {s.name: s.state for s in lab.status()}["node2"] == "running"


def _leftovers(lab) -> list[str]:
    """Everything of this lab that still exists on this host (other labs may run next to it)."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    found += [f"netns {n.split()[0]}" for n in netns.splitlines() if n.startswith(f"{lab.bridge}-")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      timeout=10).stdout)
    found += [f"link {link['ifname']}" for link in links if link["ifname"].startswith(lab.bridge)]
    mountinfo = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mountinfo.splitlines()
              if str(lab.dir) in line.split()[4] or f"/run/netns/{lab.bridge}-" in line.split()[4]]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if (("picluster.lab.supervisor" in text and str(lab.dir) in text)
                or ("systemd-nspawn" in text and f"--machine={lab.bridge}-" in text)
                or (text.startswith("apt-cacher-ng") and str(lab.proxy_dir) in text)):
            found.append(f"process {proc.name}: {text[:80]}")
    cgroups = Path("/sys/fs/cgroup")
    found += [f"cgroup {p}" for p in cgroups.glob(f"*/{lab.bridge}-*")]
    found += [f"cgroup {p}" for p in cgroups.glob(f"*/**/{lab.bridge}-*") if p.is_dir()]
    return sorted(set(found))


def test_down_leaves_nothing_behind(lab_session) -> None:
    lab = lab_session
    started = time.monotonic()
    lab.down()
    took = time.monotonic() - started
    assert _leftovers(lab) == []
    assert all(s.state == "stopped" for s in lab.status())
    assert took < 30, f"down took {took:.1f}s"
    assert lab.down() == [], "a second down finds nothing to remove"
