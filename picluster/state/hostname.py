"""The host's name: /etc/hostname and the running kernel's hostname."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import content_probe, parse_content, q, write_command

LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class HostnameFacts:
    """What `hostname` says and what /etc/hostname holds (None when missing)."""

    running: str
    persisted: bytes | None


class Hostname:
    """Ensure the host is called `hostname`, now (the kernel's) and at boot (/etc/hostname).

    Example: ``Hostname("node1")``
    """

    def __init__(self, hostname: str) -> None:
        if not LABEL.match(hostname):
            raise ValueError(f"not a host name: {hostname!r}")
        self.hostname = hostname

    @property
    def name(self) -> str:
        """Return the step label."""
        return "hostname"

    def probes(self) -> Mapping[str, str]:
        """Read the running name and the file."""
        return {"running": "hostname", "file": content_probe("/etc/hostname")}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> HostnameFacts:
        """Type the outputs."""
        return HostnameFacts(outputs["running"].stdout.strip(), parse_content(outputs["file"], "/etc/hostname"))

    def decide(self, facts: HostnameFacts) -> Decision:
        """Write the file and set the running name where they differ."""
        want = self.hostname.encode() + b"\n"
        diff: list[str] = []
        commands: list[Command] = []
        if facts.persisted != want:
            old = facts.persisted.decode(errors="replace").strip() if facts.persisted is not None else "(missing)"
            diff.append(f"/etc/hostname: {old} -> {self.hostname}")
            commands.append(write_command("/etc/hostname", want, mode=0o644, owner="root", group="root"))
        if facts.running != self.hostname:
            diff.append(f"running hostname: {facts.running} -> {self.hostname}")
            commands.append(Command(f"hostname {q(self.hostname)}"))
        if not commands:
            return Ok(f"host is called {self.hostname} (running and /etc/hostname)")
        return Change("\n".join(diff), commands)
