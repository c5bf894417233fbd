"""Tasks that act on the whole cluster: up (and, as they land, shutdown, reboot, status)."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable, split_names


@task(
    help={
        "inventory": INVENTORY_HELP,
        "only": "run only these stages, comma-separated (os,gateway,k3s,apps)",
        "from": "start at this stage and run the ones after it (resume after a failure)",
        "limit": "act only on these hosts, comma-separated",
        "dry-run": "read facts and print what would change, per host and step; change nothing",
        "parallel": "how many hosts at once (default 10)",
        "verbose": "show each step's reason or diff",
        "report": "also write the result as JSON to this file",
    },
)
def up(
    c: Context,
    inventory: str | None = None,
    only: str | None = None,
    from_: str | None = None,
    limit: str | None = None,
    dry_run: bool = False,
    parallel: int = 10,
    verbose: bool = False,
    report: str | None = None,
) -> None:
    """Bring the cluster up: preflight, then os → gateway → k3s → apps, each followed by its checks."""
    from picluster import stages as stage_catalog
    from picluster.inventory import InventoryError
    from picluster.ops.summary import HostProgress, print_up
    from picluster.ops.up import up as run_up
    from picluster.report import write_report

    inv = load(inventory)
    if parallel < 1:
        raise Exit("error: --parallel must be 1 or more", code=USAGE_ERROR)
    try:
        stages = stage_catalog.select(split_names(only), from_)
    except ValueError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    limit_names = split_names(limit)
    try:
        inv.select(limit=limit_names)
    except InventoryError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    require_reachable(inv)

    with HostProgress() as progress:
        run = run_up(inv, stages, limit=limit_names, dry_run=dry_run, parallel=parallel,
                     on_stage_start=progress.start_stage, on_host_done=progress.host_done,
                     on_gate_start=progress.start_gate)
    print_up(run, verbose=verbose)
    if report:
        write_report(report, run.to_dict())
    if run.failed:
        raise Exit("cluster.up failed: see the stage errors above; fix them and run again "
                   "(it only changes what still differs)", code=1)
