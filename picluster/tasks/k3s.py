"""The `k3s` collection: run the k3s stage alone (servers, then agents join), then its checks."""

from __future__ import annotations

import os

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import USAGE_ERROR
from picluster.tasks.os_stage import APPLY_HELP, apply_stage

HELP = {**APPLY_HELP, "airgap": "air-gap bundle directory: the k3s binary for the nodes' architecture, its "
        "k3s-airgap-images-<arch>.tar*, and install.sh (default: $PICLUSTER_K3S_AIRGAP; none: the nodes fetch "
        "https://get.k3s.io)"}


@task(help=HELP)
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, limit: str | None = None,
          parallel: int = 10, verbose: bool = False, report: str | None = None, no_checks: bool = False,
          airgap: str | None = None) -> None:
    """Install K3S at the pinned version: server, agents, graceful node shutdown, kubeconfig; then its checks."""
    from picluster.stages.k3s import AIRGAP_ENV, Airgap

    try:
        bundle = Airgap.from_option(airgap)
    except ValueError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    if bundle is not None:
        os.environ[AIRGAP_ENV] = str(bundle.dir)  # the stage's plan and its checks read it from here
    apply_stage("k3s", inventory, dry_run, limit, parallel, verbose, report, no_checks)
