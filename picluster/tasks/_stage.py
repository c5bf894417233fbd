"""Run one stage from a task: options checked, the stage and its gate run, the result printed; exit 1 on failure."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable, split_names

if TYPE_CHECKING:
    from picluster.remote.phases import RunOptions

APPLY_HELP = {
    "inventory": INVENTORY_HELP,
    "dry-run": "read facts and print what would change, per host and step; change nothing (not even a secret made)",
    "limit": "act only on these hosts, comma-separated",
    "parallel": "how many hosts at once (default 10)",
    "verbose": "show each step's reason or diff",
    "report": "also write the result as JSON to this file",
    "no-checks": "do not run the stage's testinfra checks afterwards",
    "host-timeout": "seconds of silence after which a host is reported unreachable (default 60)",
}
AIRGAP_HELP = ("K3S air-gap bundle directory: the k3s binary for the nodes' architecture, its "
               "k3s-airgap-images-<arch>.tar*, and install.sh (default: $PICLUSTER_K3S_AIRGAP; none: the nodes fetch "
               "the pinned install script, sha256-checked)")


def run_options(*, limit: str | None, dry_run: bool, parallel: int, airgap: str | None = None,
                releases: str | None = None, releases_only: bool = False,
                host_timeout: float | None = None) -> RunOptions:
    """Return the run's typed options from the task's arguments; usage errors exit 2."""
    from picluster.remote.phases import RunOptions
    from picluster.stages.k3s.install import AIRGAP_ENV

    if parallel < 1:
        raise Exit("error: --parallel must be 1 or more", code=USAGE_ERROR)
    if host_timeout is not None and not 5 <= host_timeout <= 3600:
        raise Exit("error: --host-timeout must be between 5 and 3600 seconds", code=USAGE_ERROR)
    bundle = airgap or os.environ.get(AIRGAP_ENV) or None
    if bundle is not None and not Path(bundle).expanduser().is_dir():
        raise Exit(f"error: the air-gap bundle {bundle} is not a directory (from --airgap or {AIRGAP_ENV})",
                   code=USAGE_ERROR)
    names = split_names(limit)
    only = split_names(releases)
    options = RunOptions(limit=frozenset(names) if names is not None else None, dry_run=dry_run, parallel=parallel,
                         airgap=Path(bundle).expanduser().resolve() if bundle else None, progress=sys.stderr.isatty(),
                         releases=tuple(only) if only is not None else None, releases_only=releases_only)
    return options if host_timeout is None else replace(options, host_timeout=float(host_timeout))


def apply_stage(stage_name: str, inventory: str | None, options: RunOptions, *, verbose: bool,
                report: str | None, no_checks: bool) -> None:
    """Run one stage of the catalogue on its hosts and its gate; print the table and the checks; exit 1 on failure."""
    from picluster.inventory import InventoryError
    from picluster.ops.up import Watchers, hosts_for, run_stage_with_gate
    from picluster.remote import StageFailed
    from picluster.report import print_stage, write_json
    from picluster.stages import by_name

    stage = by_name(stage_name)
    inv = load(inventory)
    try:
        hosts = hosts_for(stage, inv.select(limit=sorted(options.limit) if options.limit is not None else None))
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    if not hosts:
        raise Exit(f"error: no selected host has a role the {stage.name} stage acts on "
                   f"({', '.join(stage.roles)})", code=USAGE_ERROR)
    require_reachable(inv)
    said = Watchers(controller_step=lambda step: print(f"  {step.status:<8} {step.name}", flush=True))
    outcome = run_stage_with_gate(inv, stage, hosts, options, watch=said, gate=not no_checks)
    assert outcome.result is not None
    print_stage(outcome.result, verbose=verbose)
    if report:
        write_json(report, [outcome.result])
    if outcome.result.failures:
        raise Exit(str(StageFailed(outcome.result)), code=1)
    gate = outcome.gate
    if gate is None:
        return
    word = "ok" if gate.ok else "FAILED"
    print(f"checks {stage.gate}: {word}: {gate.passed} passed, {gate.failed} failed, {gate.skipped} skipped "
          f"({gate.duration:.1f}s)")
    for line in gate.failures:
        print(f"  {line}")
    if not gate.ok:
        if not gate.failures:
            print("\n".join("  " + line for line in gate.output.strip().splitlines()[-15:]))
        raise Exit(f"the {stage.name} stage ran, but its checks failed: see above", code=1)
