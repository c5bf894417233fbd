"""Swap off, now and at boot (the kubelet refuses to run with swap on)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import as_bytes, as_text, content_probe, parse_content, rewrite_command
from picluster.state.skip import skipped

FSTAB = "/etc/fstab"
SWAP_LINE = re.compile(r"^\s*[^#\s]+\s+\S+\s+swap\s")


@dataclass(frozen=True)
class SwapFacts:
    """Active swap areas, the bytes of /etc/fstab, the container type (empty when none)."""

    active: tuple[str, ...]
    fstab: bytes | None
    container: str


def disable_fstab_swap(text: str) -> str | None:
    """Return fstab with its swap lines commented out, or None when it has none."""
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if SWAP_LINE.match(line)]
    if not hits:
        return None
    return "\n".join(f"# {line}  # swap off for the kubelet (picluster)" if i in hits else line
                     for i, line in enumerate(lines))


class SwapOff:
    """Ensure no swap is active and none is enabled in /etc/fstab.

    In a container /proc/swaps is the host's: its swap is reported as skipped, never turned off.
    """

    @property
    def name(self) -> str:
        """Return the step label."""
        return "swap off"

    def probes(self) -> Mapping[str, str]:
        """Read the active swap areas, fstab and the container type."""
        return {
            "active": "tail -n +2 /proc/swaps",
            "fstab": content_probe(FSTAB),
            "virt": "systemd-detect-virt --container",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SwapFacts:
        """Type the outputs."""
        active = tuple(line.split()[0] for line in outputs["active"].stdout.splitlines() if line.strip())
        virt = outputs["virt"]
        return SwapFacts(active, parse_content(outputs["fstab"], FSTAB), virt.stdout.strip() if virt.ok else "")

    def decide(self, facts: SwapFacts) -> Decision:
        """Turn swap off and comment out fstab's swap lines."""
        diff: list[str] = []
        commands: list[Command] = []
        note = ""
        if facts.active and facts.container:
            note = (f"swap {', '.join(facts.active)} is the host's (this host is a container, "
                    f"{facts.container}); not turned off here")
        elif facts.active:
            diff.append(f"swapoff {', '.join(facts.active)}")
            commands.append(Command("swapoff -a"))
        if facts.fstab is not None:
            new = disable_fstab_swap(as_text(facts.fstab))
            if new is not None:
                diff.append(f"{FSTAB}: comment out its swap lines")
                commands.append(rewrite_command(FSTAB, facts.fstab, as_bytes(new)))
        if not commands:
            if note:
                return skipped(note)
            return Ok("no swap active, none in /etc/fstab")
        if note:
            diff.append(f"(skipped: {note})")
        return Change("\n".join(diff), commands)
