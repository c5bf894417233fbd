"""Benchmark `cluster.shutdown --no-drain --force` on the 5-node lab, beside the reference's way of shutting down.

Ours: the wall time of the command, which returns once it has seen every node down (agents, then the server,
then the gateway). Target (issue 8): at most the kubelet grace period + 15 s.
The reference (pi-cluster v1.4 `shutdown.yml`, §5.1): `shutdown -h 1 min` on node1-4 in parallel (forks 5,
errors ignored), then the same on the gateway; it returns at once, and the user waits for the LEDs to go dark.
Its time here: from the start until the lab has seen every node's container stop (polled every 0.2 s).
Between runs the lab powers every node on again (`lab.up`). The load average is printed beside each figure:
the machine is shared.

The lab has no K3S, so nothing delays a node's power-off. `--lock-runs N` adds N runs of both ways with a
stand-in for the kubelet on every K3S node: a process that takes the kubelet's "delay" inhibitor lock on
shutdown and never lets go (pods that use their whole grace period: the worst case), with logind's
InhibitDelayMaxSec set to the grace period, as the os stage does.

Run as root: .venv/bin/python benchmarks/shutdown/run.py [--inventory /tmp/lab-ops/lab.yml] [--runs 3]
[--lock-runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARGIN_S = 15.0
REFERENCE_COMMAND = "shutdown -h 1 min"
FORKS = 5
LOCK_UNIT = "bench-kubelet-lock"


def lock_script(grace: float) -> str:
    """logind's delay = the grace period, and a process that holds a kubelet-like delay lock until killed."""
    return "\n".join([
        "set -e",
        "mkdir -p /etc/systemd/logind.conf.d",
        f"printf '[Login]\\nInhibitDelayMaxSec={grace:g}\\n' > /etc/systemd/logind.conf.d/zz-bench.conf",
        "systemctl restart systemd-logind",
        f"systemctl is-active --quiet {LOCK_UNIT} || systemd-run --quiet --unit={LOCK_UNIT} systemd-inhibit "
        "--what=shutdown --mode=delay --who=kubelet --why='Kubelet needs time to handle node shutdown' "
        "sleep infinity",
    ])


def hold_locks(lab, grace: float) -> None:  # type: ignore[no-untyped-def]
    from picluster.remote import connect
    from picluster.remote.execute import wrap

    for h in lab.hosts:
        if not h.is_k3s:
            continue
        conn = connect(h.ssh, name=h.name)
        try:
            conn.run(wrap(lock_script(grace), sudo=conn.user != "root"), hide=True, in_stream=False, timeout=60)
        finally:
            conn.close()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def all_stopped(lab) -> bool:  # type: ignore[no-untyped-def]
    return all(s.state == "stopped" for s in lab.status())


def power_on(lab, lock_grace: float | None = None) -> None:  # type: ignore[no-untyped-def]
    lab.up()
    if not all(s.state == "running" for s in lab.status()):
        raise SystemExit("the lab did not come back up; run `invoke lab.down` and try again")
    if lock_grace is not None:
        hold_locks(lab, lock_grace)


def ours(inventory: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", "cluster.shutdown", "--no-drain", "--force",
                           "--inventory", inventory], cwd=REPO, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"cluster.shutdown failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def reference(lab, timeout: float = 300.0) -> float:  # type: ignore[no-untyped-def]
    """Play 1 on the K3S nodes (forks 5), play 2 on the gateway, then wait until every node has stopped."""
    from picluster.ops.shutdown import issue_poweroff

    nodes = [h for h in lab.hosts if h.is_k3s]
    gateways = [h for h in lab.hosts if h.role == "gateway"]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=FORKS) as pool:
        list(pool.map(lambda h: issue_poweroff(h, REFERENCE_COMMAND), nodes))   # ignore_errors: true
    for h in gateways:
        issue_poweroff(h, REFERENCE_COMMAND)
    while not all_stopped(lab):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the reference's shutdown did not finish within {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default=os.environ.get("PICLUSTER_LAB_INVENTORY", "hosts/lab.yml"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lock-runs", type=int, default=0, help="runs with a kubelet stand-in holding its lock")
    args = parser.parse_args()

    from picluster.lab import Lab

    lab = Lab(args.inventory)
    grace = max(float(h.vars["kubelet_shutdown_grace_period"]) for h in lab.hosts if h.is_k3s)
    target = grace + MARGIN_S
    def measure(runs: int, lock: bool) -> tuple[list[float], list[float]]:
        mine: list[float] = []
        theirs: list[float] = []
        lock_grace = grace if lock else None
        label = " (kubelet stand-in holding its lock)" if lock else ""
        for run in range(runs):
            power_on(lab, lock_grace)
            before = load()
            mine.append(ours(args.inventory))
            print(f"run {run + 1}{label}: cluster.shutdown {mine[-1]:.1f}s (load {before} -> {load()})", flush=True)
            power_on(lab, lock_grace)
            before = load()
            theirs.append(reference(lab))
            print(f"run {run + 1}{label}: reference `{REFERENCE_COMMAND}` per group {theirs[-1]:.1f}s "
                  f"(load {before} -> {load()})", flush=True)
        return mine, theirs

    mine, theirs = measure(args.runs, lock=False)
    locked_mine, locked_theirs = measure(args.lock_runs, lock=True)
    power_on(lab)

    print(f"\n{'measure (median)':<64}{'value':>8}  {'target':>8}  {'ratio':>6}")
    m = 0.0
    if mine:
        m, t = statistics.median(mine), statistics.median(theirs)
        print(f"{'cluster.shutdown --no-drain --force, 5 nodes':<64}{m:>7.1f}s  {target:>7.0f}s  {m / target:>6.2f}")
        print(f"{'reference: shutdown -h 1 min, nodes then gateway':<64}{t:>7.1f}s  {'-':>8}  {'-':>6}")
        print(f"{'ours / reference':<64}{m / t:>8.2f}")
    if locked_mine:
        lm, lt = statistics.median(locked_mine), statistics.median(locked_theirs)
        print(f"{'with the kubelet stand-in (worst case): cluster.shutdown':<64}{lm:>7.1f}s  {target:>7.0f}s  "
              f"{lm / target:>6.2f}")
        print(f"{'with the kubelet stand-in: reference':<64}{lt:>7.1f}s  {'-':>8}  {'-':>6}")
        print(f"{'with the kubelet stand-in: ours / reference':<64}{lm / lt:>8.2f}")
    print(f"\nruns: ours {', '.join(f'{x:.1f}' for x in mine + locked_mine)} s; reference "
          f"{', '.join(f'{x:.1f}' for x in theirs + locked_theirs)} s (stand-in runs last); grace period "
          f"{grace:.0f}s; load average now {load()} (1/5 min, {os.cpu_count()} cores)")
    return 0 if not mine or m <= target else 1

if __name__ == "__main__":
    raise SystemExit(main())
