"""The `gateway` collection: run the gateway stage alone, then its checks."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks._stage import APPLY_HELP, apply_stage, run_options


@task(help=APPLY_HELP)
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False,
          host_timeout: float = 60.0) -> None:
    """Set up the gateway: firewall, DHCP/DNS, NTP server, external-node logging; then run its checks."""
    options = run_options(limit=limit, dry_run=dry_run, parallel=parallel, host_timeout=host_timeout)
    apply_stage("gateway", inventory, options, verbose=verbose, report=report, no_checks=no_checks)
