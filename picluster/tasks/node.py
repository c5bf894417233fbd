"""The `node` collection: one node brought into the cluster, or taken out of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable
from picluster.tasks._stage import run_options

if TYPE_CHECKING:
    from picluster.ops.up import StageOutcome

COMMON = {"inventory": INVENTORY_HELP, "verbose": "show each step's reason or diff",
          "dry-run": "read facts and print what would change; change nothing",
          "report": "also write the result as JSON to this file"}


def _print(outcomes: list[StageOutcome], verbose: bool, report: str | None) -> None:
    from picluster.report import print_stage, write_report
    from picluster.tasks._maintenance import print_gate

    for o in outcomes:
        if o.result is None:
            print(f"{o.stage.name}: skipped: {o.skipped}")
            continue
        print_stage(o.result, verbose=verbose)
        print_gate(o)
    if report:
        write_report(report, {"stages": [o.to_dict() for o in outcomes]})
    failed = [o.stage.name for o in outcomes if o.failed]
    if failed:
        raise Exit(f"stopped at {failed[0]}: see above; fix it and run again (only what differs changes)", code=1)


@task(help=COMMON)
def add(c: Context, host: str, inventory: str | None = None, dry_run: bool = False, verbose: bool = False,
        report: str | None = None) -> None:
    """Bring one inventory host into the cluster: the gateway's DHCP/DNS, then its own stages and checks."""
    from picluster.ops.nodes import add_node
    from picluster.ops.up import Watchers

    inv = load(inventory)
    node = inv.hosts.get(host)
    if node is None or not node.is_k3s:
        raise Exit(f"error: {host!r} is not a server or agent of {inv.path}; add it there first", code=USAGE_ERROR)
    require_reachable(inv)
    options = run_options(limit=None, dry_run=dry_run, parallel=10)
    said = Watchers(stage_start=lambda stage, n: print(f"{stage.name} on {n} host(s)...", flush=True))
    _print(add_node(inv, node.name, options, watch=said), verbose, report)


@task(help={**COMMON, "power-off": "power the host off afterwards",
            "drain-timeout": "seconds the drain may take (default 300)"})
def remove(c: Context, host: str, inventory: str | None = None, power_off: bool = False, dry_run: bool = False,
           drain_timeout: float = 300.0, verbose: bool = False, report: str | None = None) -> None:
    """Take one node out: cordon, drain, delete its Node, uninstall K3S; once unlisted, drop its DHCP/DNS."""
    from picluster.ops.nodes import forget_stage, remove_stage
    from picluster.ops.up import run_stage_with_gate
    from picluster.stages.k3s.config import primary_server
    from picluster.tasks._common import positive

    seconds = positive("drain-timeout", drain_timeout)
    inv = load(inventory)
    options = run_options(limit=None, dry_run=dry_run, parallel=10)
    node = inv.hosts.get(host)
    if node is not None and not node.is_k3s:
        raise Exit(f"error: {host} is the {node.role}, not a K3S node", code=USAGE_ERROR)
    if node is not None and node.name == primary_server(inv).name:
        raise Exit(f"error: {host} is the first server: removing it ends the cluster (use cluster.reset)",
                   code=USAGE_ERROR)
    require_reachable(inv)
    if node is None:
        gateway = [h for h in inv.hosts.values() if h.role == "gateway"]
        stage = forget_stage(host)
        _print([run_stage_with_gate(inv, stage, gateway, options)], verbose, report)
        return
    _print([run_stage_with_gate(inv, remove_stage(inv, node.name, power_off=power_off, drain_timeout=seconds),
                                [node], options)], verbose, report)
    if not dry_run:
        print(f"{host} is out of the cluster; remove it from {inv.path} and run `node.remove {host}` again to drop "
              "its DHCP reservation and DNS record")
