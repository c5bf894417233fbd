"""The `hosts` collection: trust a host's SSH key on first contact, after you have checked its fingerprint."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import INVENTORY_HELP, USAGE_ERROR, load, require_reachable


@task(help={"host": "the inventory name of the host to trust",
            "yes": "record the key without asking (only when you know its fingerprint is right)",
            "inventory": INVENTORY_HELP})
def trust(c: Context, host: str, yes: bool = False, inventory: str | None = None) -> None:
    """Show HOST's SSH host key fingerprint (SHA256) and record it in known_hosts once you confirm it."""
    from picluster.remote.connect import Unreachable
    from picluster.remote.trust import Offered, offered_key
    from picluster.remote.trust import trust as record

    inv = load(inventory)
    found = inv.hosts.get(host)
    if found is None:
        raise Exit(f"error: no host {host!r} in {inv.path}", code=USAGE_ERROR)
    require_reachable(inv)

    def ask(offered: Offered) -> bool:
        print(f"{host} ({offered.name}) offers the host key {offered.key.get_name()} {offered.fingerprint}")
        if yes:
            return True
        answer = input("Is this the fingerprint the host shows (`ssh-keygen -lf` on its console)? Type yes to "
                       "trust it: ")
        return answer.strip().lower() == "yes"

    try:
        print(record(offered_key(found.ssh), ask))
    except Unreachable as err:
        raise Exit(f"error: {err}", code=1) from None
