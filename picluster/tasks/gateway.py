"""The `gateway` collection: run the gateway stage alone, then its checks."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks.os_stage import APPLY_HELP, apply_stage


@task(help=APPLY_HELP)
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False) -> None:
    """Set up the gateway: firewall, DHCP/DNS, NTP server, external-node logging; then run its checks."""
    apply_stage("gateway", inventory, dry_run, limit, parallel, verbose, report, no_checks)
