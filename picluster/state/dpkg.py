"""dpkg left consistent: an install cut short (a Pi losing power mid-stage) is finished before apt runs again.

Otherwise every later `apt-get` stops with "dpkg was interrupted, you must manually run
'dpkg --configure -a'", and a re-run of the stage could never converge on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput

UPDATES = "/var/lib/dpkg/updates"
FINISH = ("DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold --configure -a && "
          "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 "
          "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -f install")


@dataclass(frozen=True)
class DpkgFacts:
    """Pending journal entries of an interrupted dpkg run, and what `dpkg --audit` reports."""

    pending: int
    audit: str


class DpkgConsistent:
    """Ensure no dpkg run was left half done; finish it (`dpkg --configure -a`, `apt-get -f install`) if one was."""

    @property
    def name(self) -> str:
        """Return the step label."""
        return "dpkg consistent"

    def probes(self) -> Mapping[str, str]:
        """Count dpkg's journal entries and ask for its audit."""
        return {"pending": f"ls -A {UPDATES} | wc -l", "audit": "dpkg --audit"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> DpkgFacts:
        """Type the outputs."""
        pending = outputs["pending"].stdout.strip()
        return DpkgFacts(int(pending) if pending.isdigit() else 0, outputs["audit"].stdout.strip())

    def decide(self, facts: DpkgFacts) -> Decision:
        """Finish an interrupted run."""
        if not facts.pending and not facts.audit:
            return Ok("dpkg is consistent (no interrupted run)")
        what = [f"{facts.pending} pending dpkg journal entries"] if facts.pending else []
        if facts.audit:
            what.append("dpkg --audit: " + facts.audit.splitlines()[0][:200])
        return Change("finish an interrupted dpkg run (" + "; ".join(what) + ")", [Command(FINISH)])
