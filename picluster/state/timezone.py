"""The host's time zone: /etc/localtime links to the zone's file, /etc/timezone names it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.state._fs import q

ZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
ZONEINFO = "/usr/share/zoneinfo/"


@dataclass(frozen=True)
class TimezoneFacts:
    """Where /etc/localtime points, what /etc/timezone says, and whether the zone's file exists."""

    link: str
    named: str
    known: bool


class Timezone:
    """Ensure the host's time zone is `zone` (what `timedatectl set-timezone` does, without D-Bus).

    Example: ``Timezone("Europe/Madrid")``
    """

    def __init__(self, zone: str) -> None:
        if not ZONE.match(zone) or ".." in zone:
            raise ValueError(f"not a time zone name: {zone!r}")
        self.zone = zone

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"timezone {self.zone}"

    def probes(self) -> Mapping[str, str]:
        """Read the link, the name file and whether tzdata has the zone."""
        return {
            "link": "readlink /etc/localtime",
            "named": "cat /etc/timezone",
            "known": f"test -f {q(ZONEINFO + self.zone)}",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> TimezoneFacts:
        """Type the outputs."""
        return TimezoneFacts(outputs["link"].stdout.strip(), outputs["named"].stdout.strip(), outputs["known"].ok)

    def decide(self, facts: TimezoneFacts) -> Decision:
        """Relink and rename where they differ."""
        target = ZONEINFO + self.zone
        link_ok = facts.link in (target, "../usr/share/zoneinfo/" + self.zone)
        if link_ok and facts.named == self.zone:
            return Ok(f"time zone is {self.zone}")
        if not facts.known:
            raise StepError(f"{target} does not exist: unknown time zone {self.zone!r} or tzdata is missing")
        diff = f"time zone: {facts.named or facts.link or '(unset)'} -> {self.zone}"
        script = f"set -e\nln -sfn {q(target)} /etc/localtime\nprintf '%s\\n' {q(self.zone)} > /etc/timezone"
        return Change(diff, [Command(script)])
