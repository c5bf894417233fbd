"""The `k3s` collection: the k3s stage alone; K3S stopped and started as the reference's playbooks do."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks._common import INVENTORY_HELP, positive
from picluster.tasks._stage import AIRGAP_HELP, APPLY_HELP, apply_stage, run_options

SERVICE_HELP = {
    "inventory": INVENTORY_HELP,
    "limit": "act only on these K3S nodes, comma-separated (the order rules still apply among them)",
    "dry-run": "read each node's state and print what would be stopped or started; change nothing",
    "verbose": "show each step's reason or diff",
    "report": "also write the result as JSON to this file",
    "no-checks": "do not run the testinfra checks afterwards",
}


@task(help={**APPLY_HELP, "airgap": AIRGAP_HELP})
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False,
          airgap: str | None = None, host_timeout: float | None = None) -> None:
    """Install K3S at the pinned version: server, agents, graceful node shutdown, kubeconfig; then its checks."""
    options = run_options(limit=limit, dry_run=dry_run, parallel=parallel, airgap=airgap, host_timeout=host_timeout)
    apply_stage("k3s", inventory, options, verbose=verbose, report=report, no_checks=no_checks)


@task(help=SERVICE_HELP)
def stop(c: Context, inventory: str | None = None, limit: str | None = None, dry_run: bool = False,
         verbose: bool = False, report: str | None = None, no_checks: bool = False) -> None:
    """Stop K3S: agents first, then servers (service stop, then k3s-killall.sh); then the base checks."""
    from picluster.ops.k3s_service import STOP
    from picluster.tasks._maintenance import run_stage_task, selected

    options = run_options(limit=limit, dry_run=dry_run, parallel=10)
    inv, hosts = selected(inventory, options, STOP.roles)
    run_stage_task(inv, STOP, hosts, options, verbose=verbose, report=report, no_checks=no_checks)


@task(help={**SERVICE_HELP, "ready-timeout": "seconds the nodes may take to be Ready (default 300)"})
def start(c: Context, inventory: str | None = None, limit: str | None = None, dry_run: bool = False,
          verbose: bool = False, report: str | None = None, no_checks: bool = False,
          ready_timeout: float = 300.0) -> None:
    """Start K3S: servers first, then agents, then wait until the nodes are Ready; then the k3s checks."""
    from picluster.ops.k3s_service import start_stage
    from picluster.tasks._maintenance import run_stage_task, selected

    stage = start_stage(positive("ready-timeout", ready_timeout))
    options = run_options(limit=limit, dry_run=dry_run, parallel=10)
    inv, hosts = selected(inventory, options, stage.roles)
    run_stage_task(inv, stage, hosts, options, verbose=verbose, report=report, no_checks=no_checks)
