"""The `os` collection: run the os stage alone (every Pi, gateway included), then its checks."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable, split_names

APPLY_HELP = {
    "inventory": INVENTORY_HELP,
    "dry-run": "read facts and print what would change, per host and step; change nothing (not even a secret made)",
    "limit": "act only on these hosts, comma-separated",
    "parallel": "how many hosts at once (default 10)",
    "verbose": "show each step's reason or diff",
    "report": "also write the result as JSON to this file",
    "no-checks": "do not run the stage's testinfra checks afterwards",
}


def apply_stage(stage_name: str, inventory: str | None, dry_run: bool, limit: str | None, parallel: int,
                verbose: bool, report: str | None, no_checks: bool) -> None:
    """Run one stage of the catalogue on its hosts, print the table, then run its gate; exit 1 on failure."""
    from picluster import secrets
    from picluster.inventory import InventoryError
    from picluster.ops.check import run_gate
    from picluster.remote import run_stage
    from picluster.report import print_stage, write_json
    from picluster.stages import STAGES

    stage = next(s for s in STAGES if s.name == stage_name)
    assert stage.plan is not None
    inv = load(inventory)
    if parallel < 1:
        raise Exit("error: --parallel must be 1 or more", code=USAGE_ERROR)
    try:
        hosts = [h for h in inv.select(limit=split_names(limit)) if h.role in stage.roles]
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    if not hosts:
        raise Exit(f"error: no selected host has a role the {stage.name} stage acts on "
                   f"({', '.join(stage.roles)})", code=USAGE_ERROR)
    require_reachable(inv)
    with secrets.dry_run(dry_run):    # a dry run makes no secret or token on first use
        result = run_stage(stage.name, hosts, stage.plan(inv), dry_run=dry_run, parallel=parallel, check=False)
    print_stage(result, verbose=verbose)
    if report:
        write_json(report, [result])
    if result.failures:
        from picluster.remote import StageFailed

        raise Exit(str(StageFailed(result)), code=1)
    if dry_run or no_checks or stage.gate is None:
        return
    gate = run_gate(inv, stage.gate, hosts)
    word = "ok" if gate.ok else "FAILED"
    print(f"checks {stage.gate}: {word}: {gate.passed} passed, {gate.failed} failed, {gate.skipped} skipped "
          f"({gate.duration:.1f}s)")
    for line in gate.failures:
        print(f"  {line}")
    if not gate.ok:
        if not gate.failures:
            print("\n".join("  " + line for line in gate.output.strip().splitlines()[-15:]))
        raise Exit(f"the {stage.name} stage ran, but its checks failed: see above", code=1)


@task(help=APPLY_HELP)
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False) -> None:
    """Prepare every Pi's OS: packages, time, kernel settings, SSH hardening; then run its checks."""
    apply_stage("os", inventory, dry_run, limit, parallel, verbose, report, no_checks)
