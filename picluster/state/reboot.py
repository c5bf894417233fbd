"""Reboot a host when an earlier step of the run needs it; the runner waits until it is back.

`Reboot` reads the `NEEDS_REBOOT` mark (left by e.g. a kernel command line change) and schedules the
reboot two seconds ahead, so its own command returns cleanly. It leaves the `rebooting` mark with the
boot id it saw: the runner then waits, bounded, for a new boot id and runs the next steps on a new
connection (`picluster.remote.reboot`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.facts import BOOT_ID
from picluster.remote import NEEDS_REBOOT, Change, Command, Decision, Ok, ProbeOutput
from picluster.remote.reboot import reboot_script, rebooting_mark


@dataclass(frozen=True)
class RebootFacts:
    """Whether a step of this run needs a reboot, and the current boot id."""

    needed: bool
    boot_id: str


class Reboot:
    """Reboot the host if an earlier step of this run left `NEEDS_REBOOT`; the runner waits for it."""

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
        script = reboot_script("picluster-reboot", "picluster: reboot for a boot-time change")
        return Change(f"reboot (boot {facts.boot_id[:8]}), then wait until the host is back", [Command(script)],
                      sets=frozenset({rebooting_mark(facts.boot_id)}), clears=frozenset({NEEDS_REBOOT}))
