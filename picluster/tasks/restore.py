"""The `restore` collection: the cluster restored from a Velero backup."""

from __future__ import annotations

from invoke import Context, task

from picluster.tasks._common import INVENTORY_HELP
from picluster.tasks.backup import KUBECONFIG_HELP, velero_name


@task(help={"inventory": INVENTORY_HELP, "kubeconfig": KUBECONFIG_HELP,
            "restore-name": "the Restore object's name (default: NAME-restore-<UTC time>)",
            "timeout": "seconds Velero may take to finish the restore (default 1800)"})
def cluster(c: Context, name: str, inventory: str | None = None, kubeconfig: str | None = None,
            restore_name: str | None = None, timeout: float = 1800.0) -> None:
    """Restore the cluster from the Velero backup NAME: a Restore object, waited for until Velero finishes it."""
    import time

    from picluster.ops.backups import restore_object
    from picluster.tasks._maintenance import velero_task

    backup = velero_name(name)
    made = restore_name or f"{backup[:40]}-restore-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    velero_task(inventory, kubeconfig, "Restore", restore_object(velero_name(made), backup), timeout)
