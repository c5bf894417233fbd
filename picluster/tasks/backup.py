"""The `backup` collection: restic backups of the hosts now, their snapshots, a restore; a Velero backup."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR
from picluster.tasks._stage import run_options

KUBECONFIG_HELP = "the cluster's kubeconfig (default: $PICLUSTER_KUBECONFIG, else the one the k3s stage fetched)"


@task(help={"inventory": INVENTORY_HELP, "limit": "back up only these hosts, comma-separated",
            "verbose": "show each step's reason or diff", "report": "also write the result as JSON to this file",
            "no-checks": "do not run the apps checks afterwards"})
def now(c: Context, inventory: str | None = None, limit: str | None = None, verbose: bool = False,
        report: str | None = None, no_checks: bool = False) -> None:
    """Back up every host (or --limit) with restic now, as its daily timer does; then the apps checks."""
    from picluster.ops.backups import BackupNow
    from picluster.remote.phases import HostPhase
    from picluster.stages import Stage
    from picluster.tasks._maintenance import run_stage_task, selected

    stage = Stage("backup-now", ("gateway", "server", "agent"), "restic backup now",
                  lambda inv, options: [HostPhase("backup", lambda host: [BackupNow()])], gate="apps")
    options = run_options(limit=limit, dry_run=False, parallel=10)
    inv, hosts = selected(inventory, options, stage.roles)
    run_stage_task(inv, stage, hosts, options, verbose=verbose, report=report, no_checks=no_checks)


@task(help={"inventory": INVENTORY_HELP, "all-hosts": "list every host's snapshots in the shared repository",
            "json": "print the list as JSON"})
def snapshots(c: Context, host: str, inventory: str | None = None, all_hosts: bool = False,
              json: bool = False) -> None:
    """List a host's restic snapshots (id, time, host, paths) from the backup repository."""
    import json as json_lib

    from picluster.ops.backups import parse_snapshots, snapshots_probe
    from picluster.remote import StepError
    from picluster.remote.phases import ControllerContext, ResultTable, RunOptions
    from picluster.tasks._maintenance import one_host

    _, target = one_host(inventory, host)
    try:
        out = ControllerContext(RunOptions(), [target], ResultTable([])).read(
            target, {"list": snapshots_probe(target.name, all_hosts)})["list"]
        if out.exit_code == 3:
            from picluster.ops.backups import NO_RESTIC

            raise StepError(f"{target.name}: {NO_RESTIC}")
        if not out.ok:
            raise StepError(f"{target.name}: restic snapshots failed (exit {out.exit_code}): "
                            f"{out.stdout.strip()[-300:]}")
        found = parse_snapshots(out.stdout)
    except StepError as err:
        raise Exit(f"backup.snapshots: {err}", code=1) from None
    if json:
        print(json_lib.dumps(found, indent=2))
        return
    for s in found:
        print(f"{s['id']:<10} {s['time'][:19]:<20} {s['hostname']:<10} {' '.join(s['paths'])}")
    print(f"{len(found)} snapshots")


@task(help={"inventory": INVENTORY_HELP, "path": "the absolute path to restore (a file or a directory)",
            "snapshot": "the snapshot id (default: the host's latest)",
            "target": "restore under this directory (default /: where it was)",
            "dry-run": "say what would be restored; change nothing", "verbose": "show the step's reason or diff",
            "report": "also write the result as JSON to this file",
            "no-checks": "do not run the apps checks afterwards"})
def restore(c: Context, host: str, path: str, inventory: str | None = None, snapshot: str = "latest",
            target: str = "/", dry_run: bool = False, verbose: bool = False, report: str | None = None,
            no_checks: bool = False) -> None:
    """Restore a path of a host from its restic snapshot (latest by default); a file that matches is left."""
    from picluster.ops.backups import Restore, check_restore_args
    from picluster.remote.phases import HostPhase
    from picluster.stages import Stage
    from picluster.tasks._maintenance import one_host, run_stage_task

    wrong = check_restore_args(path, snapshot, target)
    if wrong:
        raise Exit(f"error: {wrong}", code=USAGE_ERROR)
    inv, node = one_host(inventory, host)
    step = Restore(node.name, path, snapshot, target)
    stage = Stage("backup-restore", (node.role,), "restic restore",
                  lambda inv, options: [HostPhase("restore", lambda h: [step])], gate="apps")
    options = run_options(limit=node.name, dry_run=dry_run, parallel=1)
    run_stage_task(inv, stage, [node], options, verbose=verbose, report=report, no_checks=no_checks)


@task(help={"inventory": INVENTORY_HELP, "kubeconfig": KUBECONFIG_HELP,
            "timeout": "seconds Velero may take to finish the backup (default 1800)"})
def cluster(c: Context, name: str, inventory: str | None = None, kubeconfig: str | None = None,
            timeout: float = 1800.0) -> None:
    """Back up the cluster with Velero now: a Backup object NAME, waited for until Velero finishes it."""
    from picluster.ops.backups import backup_object
    from picluster.tasks._maintenance import velero_task

    velero_task(inventory, kubeconfig, "Backup", backup_object(velero_name(name)), timeout)


def velero_name(name: str) -> str:
    """The name as Velero's object name; exit 2 when it is not a DNS label."""
    from picluster.ops.backups import NAME

    if not NAME.match(name):
        raise Exit(f"error: {name!r} is not a valid name (lower-case letters, digits and '-', at most 63)",
                   code=USAGE_ERROR)
    return name
