"""The `k3s` collection: run the k3s stage alone (servers, then agents join), then its checks."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks._stage import AIRGAP_HELP, APPLY_HELP, apply_stage, run_options


@task(help={**APPLY_HELP, "airgap": AIRGAP_HELP})
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False,
          airgap: str | None = None) -> None:
    """Install K3S at the pinned version: server, agents, graceful node shutdown, kubeconfig; then its checks."""
    options = run_options(limit=limit, dry_run=dry_run, parallel=parallel, airgap=airgap)
    apply_stage("k3s", inventory, options, verbose=verbose, report=report, no_checks=no_checks)
