"""The `apps` collection: the platform's releases (plan, apply, status) and the hosts' backups."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, split_names
from picluster.tasks._stage import apply_stage, run_options

RELEASES_HELP = "only these releases, comma-separated (in dependency order; see k8s/releases.yml)"


@task(help={
    "inventory": INVENTORY_HELP,
    "dry-run": "read facts and print what would change; change nothing (no helm upgrade, no apply, "
               "no secret, CA or download made)",
    "only": RELEASES_HELP,
    "releases-only": "skip the hosts' part (Minio, restic): only the Helm releases",
    "limit": "the hosts' part on these hosts only, comma-separated",
    "parallel": "how many hosts at once (default 10)",
    "verbose": "show each step's reason or diff",
    "report": "also write the result as JSON to this file",
    "no-checks": "do not run the stage's testinfra checks afterwards",
})
def apply(c: Context, inventory: str | None = None, dry_run: bool = False, only: str | None = None,
          releases_only: bool = False, limit: str | None = None, parallel: int = 10, verbose: bool = False,
          report: str | None = None, no_checks: bool = False) -> None:
    """Minio and restic on the hosts, then every release in dependency order (helm upgrade --install); checks."""
    from picluster.stages.apps.spec import SpecError, load_releases

    options = run_options(limit=limit, dry_run=dry_run, parallel=parallel, releases=only,
                          releases_only=releases_only)
    try:
        load_releases().ordered(options.releases)
    except SpecError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    apply_stage("apps", inventory, options, verbose=verbose, report=report, no_checks=no_checks)


@task(help={"inventory": INVENTORY_HELP, "only": RELEASES_HELP})
def plan(c: Context, inventory: str | None = None, only: str | None = None) -> None:
    """Print install / upgrade / unchanged per release, with the reason; change nothing."""
    from rich.table import Table

    from picluster.console import make_console
    from picluster.kube.client import KubeError
    from picluster.stages.apps.engine import plan_releases
    from picluster.stages.apps.helm import HelmError
    from picluster.stages.apps.render import RenderError
    from picluster.stages.apps.spec import SpecError

    inv = load(inventory)
    try:
        plans = plan_releases(inv, only=split_names(only))
    except SpecError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    except (HelmError, KubeError, RenderError) as err:
        raise Exit(f"error: {err}", code=1) from None
    style = {"install": "yellow", "upgrade": "yellow", "configure": "yellow", "unchanged": "green"}
    table = Table(title="apps.plan (nothing was changed)", title_justify="left")
    for column in ("release", "namespace", "chart", "action", "why"):
        table.add_column(column)
    for p in plans:
        s = style.get(p.action, "")
        table.add_row(p.release.name, p.release.namespace, p.release.chart.label, f"[{s}]{p.action}[/{s}]",
                      p.reason)
    make_console().print(table)


@task(help={"inventory": INVENTORY_HELP})
def status(c: Context, inventory: str | None = None) -> None:
    """Each release: the pinned chart beside what helm reports deployed, and its status."""
    from rich.table import Table

    from picluster.console import make_console
    from picluster.stages.apps.engine import Tools
    from picluster.stages.apps.helm import Helm, HelmError
    from picluster.stages.apps.spec import load_releases

    inv = load(inventory)
    tools = Tools.detect(inv)
    why = tools.missing()
    if why is not None:
        raise Exit(f"error: {why}", code=USAGE_ERROR)
    assert tools.helm is not None
    try:
        deployed = Helm(tools.helm, tools.kubeconfig).deployed()
    except HelmError as err:
        raise Exit(f"error: {err}", code=1) from None
    table = Table(title="apps.status", title_justify="left")
    for column in ("release", "namespace", "pinned", "deployed", "status"):
        table.add_column(column)
    behind = 0
    for r in load_releases().ordered():
        if not r.helm:
            table.add_row(r.name, r.namespace, r.chart.label, f"bundled with {r.bundled}", "-")
            continue
        d = deployed.get((r.namespace, r.name))
        ok = d is not None and d.chart == r.chart.label and d.status == "deployed"
        behind += not ok
        s = "green" if ok else "red"
        table.add_row(r.name, r.namespace, r.chart.label, d.chart if d else "-",
                      f"[{s}]{d.status if d else 'not deployed'}[/{s}]")
    make_console().print(table)
    if behind:
        raise Exit(f"{behind} release(s) not deployed at their pinned chart: run `invoke apps.apply`", code=1)
