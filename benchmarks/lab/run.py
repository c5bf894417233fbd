"""Benchmark the lab: `lab.up` of every node until all answer SSH, `lab.down`, idle node memory, cold base.

Targets (issue 3), with the base cached: up <= 20 s, down <= 10 s, idle node memory <= 64 MiB.
The cold base build (debootstrap from the host's Debian archive) is reported, with no target.
Run as root: /tmp/tv/bin/python benchmarks/lab/run.py [--inventory hosts/lab.yml] [--runs 3] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

UP_TARGET_S = 20.0
DOWN_TARGET_S = 10.0
MEMORY_TARGET_MIB = 64.0
SETTLE_S = 10.0  # let boot-time work (cloud-init's last stage, journald) finish before measuring "idle"
MIB = 1024 * 1024


def cgroup_memory(pid: int) -> int | None:
    """Bytes charged to the memory cgroup of pid (v2 memory.current, or v1 memory.usage_in_bytes)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
        elif controllers == "" and not Path("/sys/fs/cgroup/memory").is_dir():
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current"
        else:
            continue
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            return None
    return None


def cold_build() -> float:
    """Seconds to build the base from nothing, into a throw-away cache (the real cache is untouched)."""
    from picluster.lab import base

    root = Path(tempfile.mkdtemp(prefix="bench-cold-", dir=str(base.DEFAULT_CACHE.parent)))
    previous = os.environ.get(base.CACHE_ENV)
    os.environ[base.CACHE_ENV] = str(root)
    try:
        started = time.monotonic()
        base.ensure()
        return time.monotonic() - started
    finally:
        if previous is None:
            os.environ.pop(base.CACHE_ENV, None)
        else:
            os.environ[base.CACHE_ENV] = previous
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default=os.environ.get("PICLUSTER_LAB_INVENTORY", "hosts/lab.yml"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="do not time a cold base build")
    args = parser.parse_args()

    from picluster.lab import Lab, base
    from picluster.lab.measure import node_memory, node_pids

    lab = Lab(args.inventory)
    base.ensure()  # "with the base cached"
    lab.down()
    ups, downs, pss, charged = [], [], [], []
    for run in range(args.runs):
        started = time.monotonic()
        lab.up()
        ups.append(time.monotonic() - started)
        time.sleep(SETTLE_S)
        for h in lab.hosts:
            pss.append(node_memory(lab, h.name) / MIB)
            pids = node_pids(lab, h.name)
            c = cgroup_memory(min(pids)) if pids else None
            if c is not None:
                charged.append(c / MIB)
        started = time.monotonic()
        lab.down()
        downs.append(time.monotonic() - started)
        print(f"run {run + 1}: up {ups[-1]:.1f}s, down {downs[-1]:.1f}s, "
              f"node PSS {min(pss[-len(lab.hosts):]):.1f}-{max(pss[-len(lab.hosts):]):.1f} MiB", flush=True)
    cold = None if args.skip_cold else cold_build()

    n = len(lab.hosts)
    rows = [
        (f"lab.up, {n} nodes, until all answer SSH (median)", statistics.median(ups), "s", UP_TARGET_S),
        ("lab.down (median)", statistics.median(downs), "s", DOWN_TARGET_S),
        ("idle node memory, PSS of its processes (max)", max(pss), "MiB", MEMORY_TARGET_MIB),
    ]
    if charged:
        rows.append(("idle node cgroup charge incl. page cache and supervisor (max)", max(charged), "MiB", None))
    if cold is not None:
        rows.append(("cold base build (debootstrap + setup)", cold, "s", None))
    print(f"\n{'measure':<64}{'value':>10}  {'target':>8}  {'ratio':>6}")
    for name, value, unit, target in rows:
        tgt = f"{target:.0f} {unit}" if target else "-"
        ratio = f"{value / target:.2f}" if target else "-"
        print(f"{name:<64}{value:>8.1f} {unit:<3}{tgt:>8}  {ratio:>6}")
    print(f"\nruns: {args.runs}; up {', '.join(f'{u:.1f}' for u in ups)} s; "
          f"down {', '.join(f'{d:.1f}' for d in downs)} s")
    return 0 if all(t is None or v <= t for _, v, _, t in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
