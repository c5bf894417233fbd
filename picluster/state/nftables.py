"""The firewall: /etc/nftables.conf checked with `nft -c` before it is installed, applied atomically,
loaded at boot, and re-applied when the live ruleset no longer is the one picluster applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import q
from picluster.state.checked_file import CheckedFile
from picluster.state.files import FileFacts

NFTABLES_CONF = "/etc/nftables.conf"
# The sha256 of `nft -s list ruleset` right after picluster applied the file: the live ruleset is
# compared with it, so a ruleset changed by hand (or not loaded at boot) is applied again.
APPLIED = "/var/lib/picluster/nftables.sha256"
LIVE = "nft -s list ruleset | sha256sum | cut -d' ' -f1"


@dataclass(frozen=True)
class RulesetFacts:
    """The file's facts, the live ruleset's hash, the hash recorded when applied, the unit's enablement."""

    file: FileFacts
    live: str
    applied: str
    enabled: bool


class NftRuleset:
    """Ensure /etc/nftables.conf holds `content` (a whole ruleset, starting with `flush ruleset`), is live,
    and is loaded at boot by nftables.service."""

    def __init__(self, content: str, *, path: str = NFTABLES_CONF) -> None:
        self.file = CheckedFile(path, content, check="nft -c -f {path}", mode=0o755)
        self.path = path

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"nftables ruleset {self.path}"

    def probes(self) -> Mapping[str, str]:
        """The file, the live ruleset's hash, the recorded hash, and the boot unit."""
        return {
            **{f"file.{k}": v for k, v in self.file.probes().items()},
            "live": LIVE,
            "applied": f"cat {APPLIED}",
            "enabled": "systemctl is-enabled nftables.service",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RulesetFacts:
        """Type the outputs."""
        file = self.file.parse({k.removeprefix("file."): v for k, v in outputs.items() if k.startswith("file.")},
                               marks)
        applied = outputs["applied"].stdout.strip() if outputs["applied"].ok else ""
        return RulesetFacts(file, outputs["live"].stdout.strip(), applied, outputs["enabled"].ok)

    def decide(self, facts: RulesetFacts) -> Decision:
        """Install, apply and record; or re-apply a live ruleset that drifted; enable at boot."""
        decision = self.file.decide(facts.file)
        diff: list[str] = []
        commands: list[Command] = []
        if isinstance(decision, Change):
            diff.append(decision.diff)
            commands.extend(decision.commands)
        if commands or not facts.applied or facts.live != facts.applied:
            if not commands:
                diff.append("the live ruleset is not the one in the file (changed by hand, or not loaded): apply it")
            commands.append(Command("\n".join([
                "set -e",
                f"nft -f {q(self.path)}",
                f"mkdir -p -- {q(APPLIED.rsplit('/', 1)[0])}",
                f"{LIVE} > {q(APPLIED)}",
            ])))
        if not facts.enabled:
            diff.append("enable nftables.service (loads the file at boot)")
            commands.append(Command("systemctl enable nftables.service"))
        if not commands:
            return Ok(f"{self.path} is live and loaded at boot")
        return Change("\n".join(diff), commands)
