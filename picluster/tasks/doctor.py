"""The `doctor` task: is this controller ready to drive the cluster of an inventory, and what to fix."""

from __future__ import annotations

import os

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR


@task(help={
    "inventory": INVENTORY_HELP,
    "offline": "do not connect to the hosts: check only this controller and its files",
    "timeout": "seconds each host may take to answer each step of an SSH login (default 3)",
    "parallel": "how many hosts are asked at once (default 16)",
    "json": "print the findings as JSON instead of the table",
})
def doctor(c: Context, inventory: str | None = None, offline: bool = False, timeout: float = 3.0,
           parallel: int = 16, json: bool = False) -> None:
    """Check Python, Helm, the inventory, its SSH key, known_hosts and each host's SSH; exit 1 if any is to fix."""
    from picluster.console import make_console, print_json
    from picluster.inventory import default_inventory_path
    from picluster.ops.doctor import doctor as run_doctor
    from picluster.ops.doctor import print_doctor

    try:
        timeout = float(timeout)
    except ValueError:
        raise Exit(f"error: --timeout must be a number of seconds, not {timeout!r}", code=USAGE_ERROR) from None
    if not 0 < timeout <= 60:
        raise Exit("error: --timeout must be more than 0 and at most 60 seconds", code=USAGE_ERROR)
    if parallel < 1:
        raise Exit("error: --parallel must be 1 or more", code=USAGE_ERROR)
    path = inventory or default_inventory_path()
    why = "not asked (--offline)" if offline else _lab_down(path)
    console = make_console(stderr=json)
    with console.status("asking the hosts" if not why else "checking"):
        run = run_doctor(path, reachability=why, timeout=timeout, parallel=parallel)
    if json:
        print_json(run.to_dict())
    else:
        print_doctor(run, console)
    if run.to_fix:
        raise Exit(code=1)


def _lab_down(path: str | os.PathLike[str]) -> str:
    """Why the hosts of a lab inventory must not be asked (its lab is down), else ''."""
    from picluster.inventory import InventoryError, load_inventory
    from picluster.tasks._common import require_reachable

    try:
        require_reachable(load_inventory(path))
    except InventoryError:
        return ""
    except Exit as err:
        return f"not asked: {str(err.message).removeprefix('error: ')}"
    return ""
