"""Faults caused for real against the lab (marker `lab`; Linux, root): one lab for the module.

In order: a streamed upload whose node drops off the network half-way (the old file stays, the node is
unreachable within the host timeout, the other node finishes); Ctrl-C in the middle of a run (stopped within
2 s, each host's state said, the work a host was doing finishes on its own, the next run waits for it);
the controller killed (SIGKILL, its whole process group: a laptop dying) at three moments of a first
os+gateway run, each followed by the check that every file the stages manage is whole and every daemon's
configuration parses; then a run converges and a second changes nothing; last, a reboot an earlier run left
scheduled is taken over by the next run instead of striking it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
INVENTORY = os.environ.get("PICLUSTER_LAB_INVENTORY", str(REPO / "hosts" / "lab.yml"))
STAGES = "os,gateway"


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


def on_node(lab: Any, name: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `script` as root on the node."""
    # ssh hands the remote shell one string: the script is quoted for it
    return subprocess.run(lab.ssh_argv(name, ["sudo", "-n", "sh", "-c", shlex.quote(script)]), capture_output=True,
                          text=True, timeout=timeout)


def link(lab: Any, name: str, state: str) -> None:
    """Set the node's only link up or down inside its own network namespace (the lab made both)."""
    from picluster.lab import network

    subprocess.run(["ip", "netns", "exec", network.netns_name(lab.bridge, name), "ip", "link", "set", "eth0", state],
                   check=True, timeout=10)


@dataclass(frozen=True)
class Upload:
    local: Path
    remote: str
    name: str = "upload"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Any:
        from picluster.remote import Change
        from picluster.state._fs import write_command

        return Change("upload", [write_command(self.remote, self.local, mode=0o644, owner="root", group="root")])


def test_a_node_dropping_off_mid_upload_keeps_its_old_file_and_the_other_finishes(lab: Any, tmp_path: Path) -> None:
    from picluster.inventory import load_inventory
    from picluster.remote import run_stage

    inv = load_inventory(INVENTORY)
    victim, other = inv.hosts["node3"], inv.hosts["node2"]
    target = "/var/tmp/picluster-big"
    for h in (victim, other):
        assert on_node(lab, h.name, f"printf 'old\\n' > {target}").returncode == 0
    big = tmp_path / "big"
    with big.open("wb") as f:
        for _ in range(192):   # long enough to be cut half-way on a fast bridge
            f.write(os.urandom(1 << 20))

    def cut() -> None:   # the victim's cable pulled once its upload is well under way
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            size = on_node(lab, victim.name, f"stat -c %s {target}.picluster-* 2>/dev/null | head -n1").stdout.strip()
            if size.isdigit() and int(size) > 4 << 20:
                break
            time.sleep(0.1)
        link(lab, victim.name, "down")

    cutter = threading.Thread(target=cut)
    cutter.start()
    start = time.monotonic()
    try:
        result = run_stage("upload", [victim, other], lambda h: [Upload(big, target)], check=False, host_timeout=15)
        took = time.monotonic() - start
    finally:
        cutter.join()
        link(lab, victim.name, "up")
    rows = {h.host: h for h in result.hosts}
    assert rows["node2"].status == "changed", rows["node2"]
    assert rows["node3"].status == "unreachable", rows["node3"]
    assert rows["node3"].message.startswith("node3 stopped answering during step 'upload'")
    # the silence is noticed within the host timeout of the cut (node3's own row); the run as a whole also waits
    # for node2's upload, which on a loaded machine takes its own time
    assert rows["node3"].duration < 15 + 30, rows["node3"].duration
    assert took < 300, took
    digest = on_node(lab, "node2", f"sha256sum < {target}").stdout.split()[0]
    from picluster.state._fs import sha256_of

    assert digest == sha256_of(big)
    assert on_node(lab, victim.name, f"cat {target}").stdout == "old\n"
    # the node's side of the session waits for more input until its sshd gives up on the dead link (no
    # ClientAlive probes on a fresh node); end that session as sshd would (its pipes close: the input ends
    # early), and the digest differs: the temporary file goes and the old file stays
    on_node(lab, victim.name, "p=$(pgrep -x base64 | head -n1); while [ -n \"$p\" ] && [ \"$p\" != 1 ] && "
                              "[ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(ps -o ppid= -p \"$p\" | tr -d ' '); "
                              "done; [ -n \"$p\" ] && [ \"$p\" != 1 ] && kill -9 \"$p\"")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = on_node(lab, victim.name, f"ls {target}.picluster-* 2>/dev/null | wc -l; cat {target}")
        if left.returncode == 0 and left.stdout.split()[0] == "0":
            break
        time.sleep(1)
    assert left.stdout.split() == ["0", "old"], left.stdout


DRIVER = """
import sys
from dataclasses import dataclass
from picluster.inventory import load_inventory
from picluster.remote import Change, Command, run_stage

@dataclass(frozen=True)
class Work:
    name: str = "long work"
    def probes(self): return {"done": "test -e /var/tmp/picluster-work-done"}
    def parse(self, outputs, marks): return outputs["done"].ok
    def decide(self, done):
        from picluster.remote import Ok
        if done:
            return Ok("the work is done")
        return Change("work", [Command("sleep 12; touch /var/tmp/picluster-work-done")])

inv = load_inventory(sys.argv[1])
result = run_stage("work", [inv.hosts["node1"], inv.hosts["node2"]], lambda h: [Work()], check=False)
for h in result.hosts:
    print(h.host, h.status, [(s.name, s.status, s.reason or s.message or s.diff) for s in h.steps])
"""


RUNNING = "systemctl list-units --plain --no-legend --state=active,activating 'picluster-run-*' | grep -q ."


def test_ctrl_c_stops_within_two_seconds_the_hosts_finish_and_the_next_run_waits(lab: Any) -> None:
    for name in ("node1", "node2"):
        on_node(lab, name, "rm -f /var/tmp/picluster-work-done")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, INVENTORY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:   # Ctrl-C once both hosts are in the middle of the work
        busy = [on_node(lab, n, RUNNING).returncode == 0 for n in ("node1", "node2")]
        if all(busy):
            break
        time.sleep(0.2)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 2, err
    assert proc.returncode != 0
    assert "interrupted: node1 stopped in step 'long work' (it may be half-done" in err, err
    assert "Run the same command again" in err
    # the work was detached from the session: it finishes on the hosts; the next run waits for it
    again = subprocess.run([sys.executable, "-c", DRIVER, INVENTORY], capture_output=True, text=True, timeout=120,
                           cwd=REPO)
    assert again.returncode == 0, again.stderr
    for line in again.stdout.splitlines():
        name, status = line.split()[:2]
        assert status == "ok", again.stdout           # no second run of the work: it had finished
        assert "waited" in line and "for changes an earlier run left running (picluster-run-" in line, line


# --- the controller killed mid-run ---------------------------------------------------------------------------

WHOLE = """
i=0
while systemctl list-units --plain --no-legend --state=active,activating 'picluster-run-*' | grep -q .; do
  i=$((i + 1)); [ "$i" -lt 600 ] || break; sleep 1
done
echo "running=$(systemctl list-units --plain --no-legend --state=active,activating 'picluster-run-*' | wc -l)"
echo "audit=$(dpkg --audit | wc -l)"
echo "temps=$(find /etc /usr/local /var/lib/picluster -name '*.picluster-*' 2>/dev/null | wc -l)"
if sshd -t; then echo sshd=ok; else echo sshd=bad; fi
if [ -f /etc/nftables.conf ] && command -v nft >/dev/null; then
  if nft -c -f /etc/nftables.conf; then echo nft=ok; else echo nft=bad; fi
fi
if command -v dnsmasq >/dev/null; then if dnsmasq --test; then echo dnsmasq=ok; else echo dnsmasq=bad; fi; fi
"""


def assert_whole(lab: Any, moment: str) -> None:
    """Every node: no change still running, dpkg consistent, no temporary file left, every config parses."""
    for h in lab.hosts:
        done = on_node(lab, h.name, WHOLE, timeout=700)
        facts = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
        assert facts.get("running") == "0", (moment, h.name, done.stdout, done.stderr)
        assert facts.get("audit") == "0", (moment, h.name, done.stdout)
        assert facts.get("temps") == "0", (moment, h.name, done.stdout)
        bad = {k: v for k, v in facts.items() if v == "bad"}
        assert not bad, (moment, h.name, done.stdout, done.stderr)


def cluster_up(report: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([INVOKE, "-r", str(REPO), "cluster.up", "--only", STAGES, "--inventory", INVENTORY,
                             "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def kill_when(lab: Any, proc: subprocess.Popen[str], node: str, probe: str, within: float = 300) -> bool:
    """SIGKILL the controller's whole process group as soon as `probe` succeeds on `node`; whether it did."""
    deadline = time.monotonic() + within
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if on_node(lab, node, probe).returncode == 0:
            seen = True
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return seen


def test_a_controller_killed_mid_run_leaves_every_host_whole(lab: Any, tmp_path: Path) -> None:
    # 1. while packages install: the install is not cut half-way, it completes on its own
    seen = kill_when(lab, cluster_up(tmp_path / "a.json"), "node1", "pgrep -x apt-get >/dev/null")
    assert seen, "node1 never ran apt-get"
    assert_whole(lab, "killed during apt-get")
    # 2. a few seconds into the next run: whatever step it is in
    proc = cluster_up(tmp_path / "b.json")
    time.sleep(6)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert_whole(lab, "killed 6 s in")
    # 3. right after a reboot was scheduled: the reboot may happen, the host comes back whole
    kill_when(lab, cluster_up(tmp_path / "c.json"), "node1",
              "systemctl list-units --plain --no-legend 'picluster-*reboot*.timer' | grep -q .")
    time.sleep(10)   # the dead run's reboot (2 s ahead) strikes: wait until every node is back from it
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if all(on_node(lab, h.name, "systemctl is-system-running --wait >/dev/null; "
                                    "! systemctl list-units --plain --no-legend 'picluster-*reboot*.timer' | grep -q .",
                       timeout=60).returncode == 0 for h in lab.hosts):
            break
        time.sleep(2)
    assert_whole(lab, "killed after scheduling a reboot")


def test_after_the_kills_a_run_converges_and_a_second_changes_nothing(lab: Any, tmp_path: Path) -> None:
    proc = cluster_up(tmp_path / "converge.json")
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:] + err[-2000:]
    proc = cluster_up(tmp_path / "again.json")
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:] + err[-2000:]
    data = json.loads((tmp_path / "again.json").read_text())
    changed = [f"{s['stage']}/{h['host']}/{step['name']}" for s in data["stages"] for h in s["hosts"]
               for step in h["steps"] if step["status"] == "changed"]
    assert changed == []


def test_a_reboot_left_scheduled_by_a_dead_run_is_taken_over_not_suffered(lab: Any, tmp_path: Path) -> None:
    """What a run killed right after scheduling its reboot leaves: the timer (here 20 s ahead). The next run
    cancels it, says so, and reboots the host itself, waited for; nothing strikes it mid-run."""
    from picluster.lab.common import read_json

    boots = int(read_json(lab.paths("node2").run_state).get("boots", 0))
    scheduled = on_node(lab, "node2", "systemd-run --quiet --on-active=20 --unit=picluster-reboot "
                                      "--description='picluster: reboot for a boot-time change' systemctl reboot")
    assert scheduled.returncode == 0, scheduled.stderr
    report = tmp_path / "taken.json"
    run = subprocess.run([INVOKE, "-r", str(REPO), "os.apply", "--inventory", INVENTORY, "--limit", "node2",
                          "--report", str(report), "--no-checks"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (row,) = json.loads(report.read_text())["stages"][0]["hosts"]
    steps = {s["name"]: s for s in row["steps"]}
    assert steps["left by an earlier run"]["status"] == "changed"
    assert "cancelled the reboot an earlier run scheduled" in steps["left by an earlier run"]["diff"]
    assert steps["wait for the reboot"]["status"] == "ok"        # the run's own reboot, waited for
    assert int(read_json(lab.paths("node2").run_state).get("boots", 0)) == boots + 1   # one reboot, not two
    time.sleep(25)   # past the stale timer's moment: it was cancelled, nothing more happens
    assert int(read_json(lab.paths("node2").run_state).get("boots", 0)) == boots + 1
