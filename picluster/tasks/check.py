"""The `check` task: run the testinfra gates on demand, e.g. after maintenance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable, split_names

if TYPE_CHECKING:
    from picluster.ops.check import GateResult


@task(help={
    "inventory": INVENTORY_HELP,
    "stage": "check only after this stage: preflight (gate 'base'), os, gateway, k3s, apps",
    "limit": "check only these hosts, comma-separated",
    "junit": "also write a JUnit XML report to this file (one per gate: FILE gets the gate's name)",
    "json": "print the results as JSON (per gate: hosts, counts, failures) instead of lines",
})
def check(c: Context, inventory: str | None = None, stage: str | None = None, limit: str | None = None,
          junit: str | None = None, json: bool = False) -> None:
    """Run the testinfra checks of the cluster's real state: every gate, or one stage's."""
    from picluster.inventory import InventoryError
    from picluster.ops.check import gate_file, run_gate
    from picluster.stages import PREFLIGHT, STAGES

    inv = load(inventory)
    stages = [PREFLIGHT, *STAGES]
    if stage is not None:
        stages = [s for s in stages if s.name == stage]
        if not stages:
            names = ", ".join(s.name for s in (PREFLIGHT, *STAGES))
            raise Exit(f"error: unknown stage {stage!r}; stages are {names}", code=USAGE_ERROR)
    try:
        hosts = inv.select(limit=split_names(limit))
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    require_reachable(inv)
    results = []
    for s in stages:
        targets = [h for h in hosts if h.role in s.roles]
        if s.gate is None or not targets:
            continue
        if not gate_file(s.gate).exists():
            raise Exit(f"error: the {s.name} checks are missing: tests/infra/test_{s.gate}.py", code=1)
        report = None
        if junit:
            report = junit if len(stages) == 1 else junit.replace(".xml", f"-{s.gate}.xml")
        result = run_gate(inv, s.gate, targets, junit=report)
        results.append((s.name, result))
        if not json:
            _print_gate(s.name, result)
    failed = any(not r.ok for _, r in results)
    if json:
        from picluster.console import print_json

        print_json({"ok": not failed, "gates": [{"stage": name, **r.to_dict()} for name, r in results]})
    if failed:
        raise Exit("checks failed: see above", code=1)


def _print_gate(stage: str, result: GateResult) -> None:
    """One line of counts for the gate, then each failure (or the output's tail when none was parsed)."""
    word = "ok" if result.ok else "FAILED"
    print(f"{stage}: {word}: {result.passed} passed, {result.failed} failed, {result.skipped} skipped "
          f"on {', '.join(result.hosts)} ({result.duration:.1f}s)", flush=True)
    for line in result.failures:
        print(f"  {line}")
    if not result.ok and not result.failures:
        print("\n".join("  " + line for line in result.output.strip().splitlines()[-15:]))
