"""Measuring lab nodes: which processes are a node's, and the memory they use."""

from __future__ import annotations

import os
import subprocess

from picluster.lab import network
from picluster.lab.lab import Lab


def node_pids(lab: Lab, name: str) -> list[int]:
    """Return the processes of a node: those in its network namespace and in a PID namespace of their own
    (which leaves out its supervisor and nspawn)."""
    ns = network.netns_name(lab.bridge, lab.host(name).name)
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    ours = os.readlink("/proc/self/ns/pid")
    pids = []
    for pid in (int(p) for p in out.stdout.split() if p.isdigit()):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != ours:
                pids.append(pid)
        except OSError:
            continue
    return pids


def node_memory(lab: Lab, name: str) -> int:
    """Return the bytes of memory a node uses: the proportional set size (PSS) of its processes."""
    total = 0
    for pid in node_pids(lab, name):
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total
