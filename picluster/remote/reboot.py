"""Reboot a host and wait, bounded, until it answers SSH with a new boot id: the one way picluster reboots.

The runner uses it when a step asks for a reboot (the `rebooting` mark) and reconnects afterwards;
`cluster.reboot` uses it for each node of its roll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from picluster.facts import BOOT_ID
from picluster.remote.target import HostLike

REBOOT_DELAY_S = 2
BOOT_WAIT_S = 600.0
#: A mark a step leaves when its commands scheduled a reboot: the prefix, then the boot id it had.
REBOOTING = "rebooting:"


class NotBack(Exception):
    """A host did not come back after its reboot (or could not be asked to reboot); the message says which."""


def reboot_script(unit: str, description: str, delay: int = REBOOT_DELAY_S) -> str:
    """Return the command that reboots `delay` seconds ahead, so the SSH command returns first.

    A transient timer's default accuracy is a minute: without AccuracySec it may fire up to 60 s late.
    """
    return (f"systemd-run --quiet --on-active={delay} --timer-property=AccuracySec=100ms --unit={unit} "
            f"--description='{description}' systemctl reboot")


def rebooting_mark(boot_id: str) -> str:
    """Return the mark that tells the runner a reboot was scheduled from boot `boot_id`."""
    return REBOOTING + boot_id


def rebooting_from(marks: set[str] | frozenset[str]) -> str | None:
    """Return the boot id a scheduled reboot started from, if a step left the mark."""
    return next((m.removeprefix(REBOOTING) for m in marks if m.startswith(REBOOTING)), None)


def read_boot_id(host: HostLike, timeout: float) -> str | None:
    """Return the host's boot id over a fresh SSH connection, or None while it does not answer."""
    from picluster.remote.connect import Unreachable, connect

    try:
        conn = connect(host.ssh, name=host.name, timeout=timeout)
    except Unreachable:
        return None
    try:
        result = conn.run(BOOT_ID, hide=True, warn=True, in_stream=False, timeout=timeout)
        return result.stdout.strip() if result is not None and result.ok else None
    except Exception:  # NOTE: the host went down while we asked
        return None
    finally:
        conn.close()


@contextmanager
def quiet_ssh_errors() -> Iterator[None]:
    """Keep paramiko from printing a traceback for every refused attempt while a host reboots."""
    logger = logging.getLogger("paramiko.transport")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


BootReader = Callable[[HostLike, float], "str | None"]


def wait_new_boot(host: HostLike, old: str, *, wait_s: float = BOOT_WAIT_S, poll_s: float = 1.0,
                  reader: BootReader = read_boot_id,
                  clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until `host` answers with a boot id other than `old`; return the seconds; raise NotBack after `wait_s`."""
    start = clock()
    with quiet_ssh_errors():
        while True:
            now = reader(host, max(0.5, min(5.0, wait_s - (clock() - start))))
            if now and now != old:
                return clock() - start
            if clock() - start >= wait_s:
                raise NotBack(f"{host.name} did not come back within {wait_s:.0f}s after its reboot (same boot "
                              "id or no SSH answer); look at its console or power")
            time.sleep(poll_s)
