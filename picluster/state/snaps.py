"""snapd and its snaps removed (the reference removes them from the Ubuntu image)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state.apt import APT_GET

# Snaps depend on each other (apps on their base, bases on snapd): remove in rounds, like the reference.
REMOVE_ROUNDS = 3


@dataclass(frozen=True)
class SnapFacts:
    """Whether the snapd package is installed, and the installed snaps."""

    snapd: bool
    snaps: tuple[str, ...]


def remove_script(rounds: int = REMOVE_ROUNDS) -> str:
    """Return the script that removes every snap (retrying for dependencies), then purges snapd."""
    return "\n".join([
        "set -e",
        f"for round in $(seq {rounds}); do",
        "  left=$(snap list 2>/dev/null | awk 'NR > 1 {print $1}')",
        '  [ -z "$left" ] && break',
        '  for s in $left; do snap remove --purge "$s" || true; done',
        "done",
        "left=$(snap list 2>/dev/null | awk 'NR > 1 {print $1}')",
        'if [ -n "$left" ]; then echo "snaps still installed: $left" >&2; exit 1; fi',
        f"{APT_GET} purge --autoremove snapd",
    ])


class SnapsRemoved:
    """Ensure no snap is installed and the snapd package is gone."""

    @property
    def name(self) -> str:
        """Return the step label."""
        return "snapd removed"

    def probes(self) -> Mapping[str, str]:
        """Ask dpkg about snapd and snap about its snaps."""
        return {
            "snapd": "dpkg-query -W -f '${db:Status-Status}' snapd",
            "snaps": "snap list",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SnapFacts:
        """Type the outputs."""
        snapd = outputs["snapd"]
        snaps = outputs["snaps"]
        names = tuple(line.split()[0] for line in snaps.stdout.splitlines()[1:] if line.strip()) if snaps.ok else ()
        return SnapFacts(snapd.ok and snapd.stdout.strip() == "installed", names)

    def decide(self, facts: SnapFacts) -> Decision:
        """Remove snaps and snapd where present."""
        if not facts.snapd:
            return Ok("snapd is not installed")
        diff = [f"- snap {s}" for s in facts.snaps] + ["- package snapd"]
        return Change("\n".join(diff), [Command(remove_script())])
