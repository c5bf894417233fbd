"""Benchmark: `invoke --list` start-up time, ours beside a bare Invoke with an empty tasks.py.

Target (issue 2): ours <= 0.5 s. Heavy imports (kubernetes, rich, paramiko) must stay out of it.
Run: .venv/bin/python benchmarks/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5
HEAVY = ("kubernetes", "rich", "paramiko", "fabric", "jinja2", "requests")


def timed(cwd: Path, runs: int) -> float:
    """Median wall time of `invoke --list` in cwd, measured by /usr/bin/time."""
    invoke = Path(sys.executable).with_name("invoke")
    times = []
    for _ in range(runs):
        out = subprocess.run(["/usr/bin/time", "-f", "%e", str(invoke), "--list"], cwd=cwd,
                             capture_output=True, text=True, check=True)
        times.append(float(out.stderr.strip().splitlines()[-1]))
    return statistics.median(times)


def heavy_imports() -> list[str]:
    code = ("import sys; import tasks; tasks.ns.task_names; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        Path(empty, "tasks.py").write_text("from invoke import task\n\n@task\ndef noop(c):\n    pass\n")
        baseline = timed(Path(empty), args.runs)
    ours = timed(REPO, args.runs)
    heavy = heavy_imports()
    print(f"{'case':<28}{'median s':>10}")
    print(f"{'bare invoke (baseline)':<28}{baseline:>10.3f}")
    print(f"{'picluster invoke --list':<28}{ours:>10.3f}")
    print(f"ratio to baseline: {ours / baseline:.2f}x; ratio to target {TARGET_S}s: {ours / TARGET_S:.2f}")
    print(f"heavy modules imported at --list time: {', '.join(heavy) or 'none'}")
    return 0 if ours <= TARGET_S and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
