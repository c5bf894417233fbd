"""Reboot a host when an earlier step of the run needs it, and wait until it is back.

`Reboot` reads the `NEEDS_REBOOT` mark (left by e.g. a kernel command line change), schedules the
reboot two seconds ahead (so its own command returns cleanly) and leaves the old boot id in
/run/picluster/reboot-pending (tmpfs: gone once the host has rebooted). `AwaitBoot` reads that file;
when it is there, it waits on the controller until the host answers SSH with a new boot id. The
runner's connection then reopens by itself on the next step.

NOTE: the runner has no reboot of its own, so `AwaitBoot.parse` is the one step that does I/O on the
controller (new SSH connections while it waits); a runner-level "reboot and reconnect" would remove it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from picluster.remote import NEEDS_REBOOT, Change, Command, Decision, HostLike, Ok, ProbeOutput, StepError

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
PENDING = "/run/picluster/reboot-pending"
REBOOT_DELAY_S = 2
BOOT_WAIT_S = 600.0


@dataclass(frozen=True)
class RebootFacts:
    """Whether a step of this run needs a reboot, and the current boot id."""

    needed: bool
    boot_id: str


class Reboot:
    """Reboot the host if an earlier step of this run left `NEEDS_REBOOT`; pair it with `AwaitBoot`."""

    @property
    def name(self) -> str:
        """Return the step label."""
        return "reboot if needed"

    def probes(self) -> Mapping[str, str]:
        """Read the boot id."""
        return {"boot_id": BOOT_ID}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RebootFacts:
        """Type the outputs and the mark."""
        return RebootFacts(NEEDS_REBOOT in marks, outputs["boot_id"].stdout.strip())

    def decide(self, facts: RebootFacts) -> Decision:
        """Schedule the reboot when needed."""
        if not facts.needed:
            return Ok("no step of this run needs a reboot")
        script = "\n".join([
            "set -e",
            "mkdir -p /run/picluster",
            f"cat /proc/sys/kernel/random/boot_id > {PENDING}",
            f"systemd-run --quiet --on-active={REBOOT_DELAY_S} --unit=picluster-reboot "
            "--description='picluster: reboot for a boot-time change' systemctl reboot",
        ])
        return Change(f"reboot (boot {facts.boot_id[:8]}), then wait until the host is back", [Command(script)],
                      clears=frozenset({NEEDS_REBOOT}))


@dataclass(frozen=True)
class AwaitFacts:
    """The boot id the host had when the reboot was scheduled (empty: none), and how the wait went."""

    old_boot_id: str
    new_boot_id: str = ""
    waited: float = 0.0
    error: str = ""


def read_boot_id(host: HostLike, timeout: float) -> str | None:
    """Return the host's boot id over a fresh SSH connection, or None while it does not answer."""
    from picluster.remote import Unreachable, connect

    try:
        conn = connect(host.ssh, name=host.name, timeout=timeout)
    except Unreachable:
        return None
    try:
        result = conn.run(BOOT_ID, hide=True, warn=True, in_stream=False)
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


class AwaitBoot:
    """After `Reboot`, wait (bounded) until the host answers SSH with a new boot id."""

    def __init__(self, host: HostLike, *, wait_s: float = BOOT_WAIT_S, poll_s: float = 2.0,
                 reader: Callable[[HostLike, float], str | None] = read_boot_id) -> None:
        self.host = host
        self.wait_s, self.poll_s = wait_s, poll_s
        self.reader = reader

    @property
    def name(self) -> str:
        """Return the step label."""
        return "wait for the reboot"

    def probes(self) -> Mapping[str, str]:
        """Read the boot id left by `Reboot` (missing when no reboot was scheduled)."""
        return {"pending": f"cat {PENDING}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> AwaitFacts:
        """When a reboot is pending, wait on the controller for a new boot id."""
        pending = outputs["pending"]
        old = pending.stdout.strip() if pending.ok else ""
        if not old:
            return AwaitFacts("")
        start = time.monotonic()
        with quiet_ssh_errors():
            while time.monotonic() - start < self.wait_s:
                now = self.reader(self.host, min(10.0, self.poll_s * 3))
                if now and now != old:
                    return AwaitFacts(old, now, time.monotonic() - start)
                time.sleep(self.poll_s)
        return AwaitFacts(old, "", time.monotonic() - start,
                          error=f"{self.host.name} did not come back within {self.wait_s:.0f}s after its reboot")

    def decide(self, facts: AwaitFacts) -> Decision:
        """Report the wait, or fail with what to do."""
        if not facts.old_boot_id:
            return Ok("no reboot pending")
        if facts.error:
            raise StepError(f"{facts.error}; check its console or power, then run the stage again")
        return Ok(f"back after {facts.waited:.0f}s with a new boot id ({facts.new_boot_id[:8]})")
