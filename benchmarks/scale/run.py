"""Scale: lab.up, a no-op os+gateway run with its gates, check and shutdown at 5, 10 and 25 lab nodes.

    flock /tmp/picluster-lab.lock .venv/bin/python benchmarks/scale/run.py [--sizes 5,10,25] [--output F.json]

For each size N the lab inventory grows by N-5 agents (`invoke lab.inventory --agents N-5`, written into
the lab's state folder) and, from a lab that is down, the benchmark runs as the user would, each task in
its own `invoke` process:
`lab.up`; idle node memory (PSS, as benchmarks/lab/run.py); a first `cluster.up --only os,gateway`
(converging, no target); the same again, twice (no-op, gates included: the figure is the faster);
`check --stage os`; `cluster.shutdown --no-drain --force`; `lab.down`. At the first size it also converges
the whole cluster (`cluster.up`) and times a full no-op `cluster.up` and a full `check`.
While each task runs, /proc of its process tree (lab nodes left out) is sampled every 50 ms: peak RSS,
threads and open files of the controller. Each figure is printed with its growth from the first size,
its target and the ratio, with the load average at the time. Targets (issue 16): at 25 nodes lab.up
<= 45 s, the no-op os+gateway run with gates <= 2x its 5-node time, idle node <= 32 MiB, the controller's
memory and threads growing no faster than the node count; the no-op os+gateway run with gates <= 6 s and
a full no-op cluster.up <= 10 s on 5 nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INVOKE = REPO / ".venv" / "bin" / "invoke"
BASE_NODES = 5
LAB_UP_25_S = 45.0
NOOP_GROWTH_25 = 2.0
IDLE_NODE_MIB = 32.0
NOOP_5_S = 6.0
FULL_NOOP_5_S = 10.0
SETTLE_S = 10.0
MIB = 1024 * 1024
# Processes of the lab itself (nodes, their supervisors, the apt proxy): not the controller's.
LAB_PROCESSES = ("picluster.lab.supervisor", "systemd-nspawn", "unshare", "nsenter", "apt-cacher-ng")


def _status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def controller_tree(root: int) -> list[int]:
    """The process `root` and its descendants, without the lab's own processes and theirs."""
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        if pid != root and any(name in _cmdline(pid) for name in LAB_PROCESSES):
            continue
        out.append(pid)
        todo += tree.get(pid, [])
    return out


@dataclass
class Peak:
    """The controller's peaks while one task ran: summed over its process tree, and of the biggest process."""

    rss_mib: float = 0.0
    threads: int = 0
    open_files: int = 0
    processes: int = 0
    biggest_rss_mib: float = 0.0

    def sample(self, root: int) -> None:
        rss = threads = files = 0
        biggest = 0
        pids = controller_tree(root)
        for pid in pids:
            st = _status(pid)
            kib = int(st.get("VmRSS", "0 kB").split()[0])
            rss += kib
            biggest = max(biggest, kib)
            threads += int(st.get("Threads", "0"))
            try:
                files += len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                pass
        self.rss_mib = max(self.rss_mib, rss / 1024)
        self.biggest_rss_mib = max(self.biggest_rss_mib, biggest / 1024)
        self.threads = max(self.threads, threads)
        self.open_files = max(self.open_files, files)
        self.processes = max(self.processes, len(pids))


@dataclass
class Run:
    """One task's run: its wall time, exit code, the load when it started and the controller's peaks."""

    task: str
    seconds: float
    rc: int
    load: float
    cpu_busy: float   # the machine's CPU busy fraction while it ran (every process, all cores)
    peak: Peak = field(default_factory=Peak)
    report: dict[str, Any] | None = None


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    with open("/proc/stat", encoding="utf-8") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_task(args: list[str], report: Path | None = None, timeout: float = 1800) -> Run:
    """Run one `invoke` task in its own process, sampling its process tree; return its figures."""
    load = os.getloadavg()[0]
    peak = Peak()
    log = REPO / ".lab" / "bench-scale.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ invoke {' '.join(args)}\n")
        out.flush()
        start, cpu_start = time.monotonic(), cpu_times()
        proc = subprocess.Popen([str(INVOKE), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        done = threading.Event()

        def sampler() -> None:
            while not done.is_set():
                peak.sample(proc.pid)
                done.wait(0.05)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            seconds = time.monotonic() - start
            done.set()
            thread.join()
    busy = (cpu_times()[0] - cpu_start[0]) / max(1, cpu_times()[1] - cpu_start[1])
    data = json.loads(report.read_text()) if report is not None and report.is_file() else None
    run = Run(args[0], round(seconds, 2), rc, round(load, 2), round(busy, 2), peak, data)
    print(f"  {' '.join(args[:3]):<40} {seconds:7.2f} s  rc {rc}  load {load:.2f}  cpu {busy:.0%}  "
          f"rss {peak.rss_mib:.0f} MiB  threads {peak.threads}  files {peak.open_files}", flush=True)
    return run


def idle_memory(inventory: str) -> list[float]:
    """Each node's memory (PSS of its processes, MiB) after the lab has settled."""
    from picluster.lab import Lab
    from picluster.lab.measure import node_memory

    time.sleep(SETTLE_S)
    lab = Lab(inventory)
    return [node_memory(lab, h.name) / MIB for h in lab.hosts]


def leftovers(inventory: str) -> list[str]:
    """What of the lab is still there after lab.down: processes, namespaces, links, mounts, node disks."""
    from picluster.lab import Lab, network

    lab = Lab(inventory)
    supervisors, nspawns = lab._our_processes()
    left = [f"process {p}" for p in supervisors + nspawns]
    left += [f"netns {n}" for n in network.lab_netns(lab.bridge)]
    left += [f"link {n}" for n in network.lab_links(lab.bridge)]
    left += [f"mount {m}" for m in lab.mounts()]
    left += [f"disk {h.name}" for h in lab.hosts if lab.paths(h.name).dir.exists()]
    return left


def stage_times(report: dict[str, Any] | None) -> dict[str, float]:
    """Seconds of each stage and gate from a `cluster.up --report` JSON."""
    out: dict[str, float] = {}
    for stage in (report or {}).get("stages", []):
        if "duration" in stage:
            out[stage["stage"]] = round(stage["duration"], 2)
        gate = stage.get("gate") or {}
        if "duration" in gate:
            out[f"gate {stage['stage']}"] = round(gate["duration"], 2)
    return out


def measure(size: int, base: str, full: bool, work: Path) -> dict[str, Any]:
    """Every figure at one lab size."""
    from picluster.lab.grow import grown_inventory

    inventory = base if size == BASE_NODES else str(grown_inventory(base, size - BASE_NODES))
    inv = ["--inventory", inventory]
    print(f"{size} nodes ({inventory})", flush=True)
    out: dict[str, Any] = {"nodes": size, "inventory": inventory}
    runs: dict[str, Run] = {}
    runs["lab.up"] = run_task(["lab.up", *inv])
    if runs["lab.up"].rc != 0:
        raise SystemExit(f"lab.up failed at {size} nodes: see {REPO / '.lab' / 'bench-scale.log'}")
    memory = idle_memory(inventory)
    out["idle_node_mib"] = {"max": round(max(memory), 1), "median": round(statistics.median(memory), 1)}
    runs["converge os,gateway"] = run_task(["cluster.up", *inv, "--only", "os,gateway"])
    noops = [run_task(["cluster.up", *inv, "--only", "os,gateway", "--report", str(work / f"noop{size}-{i}.json")],
                      report=work / f"noop{size}-{i}.json") for i in range(2)]
    runs["no-op os,gateway with gates"] = min(noops, key=lambda r: r.seconds)
    out["no-op os,gateway all runs"] = [r.seconds for r in noops]
    out["no-op os,gateway stages and gates"] = stage_times(runs["no-op os,gateway with gates"].report)
    runs["check --stage os"] = run_task(["check", *inv, "--stage", "os"])
    if full:
        runs["converge full"] = run_task(["cluster.up", *inv])
        fulls = [run_task(["cluster.up", *inv, "--report", str(work / f"full{size}-{i}.json")],
                          report=work / f"full{size}-{i}.json") for i in range(2)]
        runs["full no-op cluster.up"] = min(fulls, key=lambda r: r.seconds)
        out["full no-op all runs"] = [r.seconds for r in fulls]
        out["full no-op stages and gates"] = stage_times(runs["full no-op cluster.up"].report)
        runs["check (every gate)"] = run_task(["check", *inv])
    runs["cluster.shutdown --no-drain --force"] = run_task(["cluster.shutdown", *inv, "--no-drain", "--force"])
    runs["lab.down"] = run_task(["lab.down", *inv])
    out["left_after_down"] = leftovers(inventory)
    if out["left_after_down"]:
        print(f"  left after lab.down: {out['left_after_down']}", flush=True)
    out["runs"] = {k: {**asdict(r), "report": None} for k, r in runs.items()}
    return out


def growth_table(results: list[dict[str, Any]]) -> None:
    """Print each figure per size with its growth from the first size, and the targets as ratios."""
    first = results[0]
    print(f"\n{'figure':<40}" + "".join(f"{r['nodes']:>10} n" for r in results) + "   growth (node count "
          + " ".join(f"{r['nodes'] / first['nodes']:.1f}x" for r in results[1:]) + ")")
    for name in first["runs"]:
        cells, growth = "", []
        for r in results:
            run = r["runs"].get(name)
            cells += f"{run['seconds']:>10.2f} s" if run else f"{'-':>12}"
            if run and r is not first:
                growth.append(f"{run['seconds'] / first['runs'][name]['seconds']:.2f}x")
        print(f"{name:<40}{cells}   {' '.join(growth)}")
    for key, unit in (("rss_mib", "MiB"), ("threads", ""), ("open_files", "")):
        name = "no-op os,gateway with gates"
        values = [r["runs"][name]["peak"][key] for r in results]
        print(f"{'controller peak ' + key + ' (no-op run)':<40}" + "".join(f"{v:>10.0f} {unit:<1}" for v in values)
              + "   " + " ".join(f"{v / values[0]:.2f}x" for v in values[1:]))
    loads = {r["nodes"]: {k: v["load"] for k, v in r["runs"].items()} for r in results}
    print(f"\nload average (1 min) at each start: {json.dumps(loads)}")


def targets(results: list[dict[str, Any]]) -> list[tuple[str, float, float, str]]:
    """(figure, value, target, unit) for each target of issue 16 that these results cover."""
    first, last = results[0], results[-1]
    noop = "no-op os,gateway with gates"
    rows = [(f"no-op os,gateway with gates, {first['nodes']} nodes", first["runs"][noop]["seconds"], NOOP_5_S, "s")]
    if "full no-op cluster.up" in first["runs"]:
        full = first["runs"]["full no-op cluster.up"]["seconds"]
        rows.append((f"full no-op cluster.up, {first['nodes']} nodes", full, FULL_NOOP_5_S, "s"))
    rows.append((f"lab.up, {last['nodes']} nodes", last["runs"]["lab.up"]["seconds"], LAB_UP_25_S, "s"))
    rows.append((f"idle node memory (max), {last['nodes']} nodes", last["idle_node_mib"]["max"], IDLE_NODE_MIB, "MiB"))
    if last is not first:
        growth = last["runs"][noop]["seconds"] / first["runs"][noop]["seconds"]
        rows.append((f"no-op os,gateway growth {first['nodes']}->{last['nodes']} nodes", growth, NOOP_GROWTH_25, "x"))
        nodes = last["nodes"] / first["nodes"]
        for key in ("rss_mib", "threads"):
            g = last["runs"][noop]["peak"][key] / first["runs"][noop]["peak"][key]
            rows.append((f"controller {key} growth / node-count growth", g / nodes, 1.0, "x"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="hosts/lab.yml", help="the base lab inventory (5 nodes)")
    parser.add_argument("--sizes", default="5,10,25", help="lab sizes, comma-separated; the first is the base")
    parser.add_argument("--no-full", action="store_true", help="skip the full cluster.up at the first size")
    parser.add_argument("--output", help="also write every figure as JSON here")
    parser.add_argument("--previous", help="the JSON of an earlier run whose sizes (from the first) come first")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    previous = json.loads(Path(args.previous).read_text()) if args.previous else []
    previous = [r for r in previous if r["nodes"] not in sizes]
    if ([r["nodes"] for r in previous] + sizes)[0] != BASE_NODES or any(s < BASE_NODES for s in sizes):
        parser.error(f"sizes start at {BASE_NODES}, the base lab")
    from picluster.lab.grow import grown_inventory

    work = REPO / ".lab" / "bench-scale"
    work.mkdir(parents=True, exist_ok=True)
    # from a lab that is down: the largest inventory names every node any size may have left
    subprocess.run([str(INVOKE), "lab.down", "--inventory", str(grown_inventory(args.inventory, max(sizes) - 5))
                    if max(sizes) > BASE_NODES else args.inventory], cwd=REPO, check=False, capture_output=True)
    results = list(previous)
    for size in sizes:
        results.append(measure(size, args.inventory, full=not results and not args.no_full, work=work))
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    growth_table(results)
    print(f"\n{'target':<56}{'value':>10}  {'target':>8}  {'ratio':>6}")
    ok = True
    for name, value, target, unit in targets(results):
        ok &= value <= target
        print(f"{name:<56}{value:>8.2f} {unit:<3}{target:>6.2f} {unit:<3}{value / target:>6.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
