"""Debian packages through apt-get, with at most one `apt-get update` per host per run."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import APT_UPDATED, Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import q

NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
APT_GET = (
    "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300"
    " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)


@dataclass(frozen=True)
class AptFacts:
    """The packages dpkg lists as installed, and whether apt-get update already ran in this run."""

    installed: frozenset[str]
    updated: bool


class Apt:
    """Ensure Debian packages are installed (or absent).

    + present: False removes them (configuration files stay)
    + recommends: also install recommended packages

    Example: ``Apt(["nfs-common", "open-iscsi"])``
    """

    def __init__(
        self, packages: str | Sequence[str], *, present: bool = True, recommends: bool = False
    ) -> None:
        self.packages = [packages] if isinstance(packages, str) else list(packages)
        bad = [p for p in self.packages if not NAME.match(p)]
        if bad or not self.packages:
            raise ValueError(f"not Debian package names: {bad or self.packages!r}")
        self.present = present
        self.recommends = recommends

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"apt {' '.join(self.packages)}"

    def probes(self) -> Mapping[str, str]:
        """List the packages' dpkg status."""
        names = " ".join(q(p) for p in self.packages)
        return {"dpkg": f"dpkg-query -W -f '${{Package}} ${{db:Status-Status}}\\n' -- {names}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> AptFacts:
        """Keep the installed ones (dpkg-query exits 1 when some are unknown: not an error)."""
        installed = set()
        for line in outputs["dpkg"].stdout.splitlines():
            name, _, status = line.partition(" ")
            if status == "installed":
                installed.add(name)
        return AptFacts(frozenset(installed), APT_UPDATED in marks)

    def decide(self, facts: AptFacts) -> Decision:
        """Install what is missing, or remove what is there."""
        names = " ".join(self.packages)
        if self.present:
            todo = [p for p in self.packages if p not in facts.installed]
            if not todo:
                return Ok(f"packages installed: {names}")
            recommends = "" if self.recommends else " --no-install-recommends"
            commands = [] if facts.updated else [Command(f"{APT_GET} update")]
            commands.append(Command(f"{APT_GET}{recommends} install {' '.join(q(p) for p in todo)}"))
            return Change("\n".join(f"+ package {p}" for p in todo), commands, sets=frozenset({APT_UPDATED}))
        todo = [p for p in self.packages if p in facts.installed]
        if not todo:
            return Ok(f"packages absent: {names}")
        return Change(
            "\n".join(f"- package {p}" for p in todo),
            [Command(f"{APT_GET} remove {' '.join(q(p) for p in todo)}")],
        )
