"""OS package upgrades (`apt-get dist-upgrade`, held packages kept) and the reboot the host asks for after one.

What an upgrade would do is read without changing the host: `apt-get update` into a private copy of the
package lists (a temporary directory, removed afterwards), then `apt-get -s dist-upgrade` against it. So a
dry run sees what the archive offers now, and the host's own lists and packages stay as they were.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.facts import BOOT_ID
from picluster.remote import APT_UPDATED, Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.remote.reboot import reboot_script, rebooting_mark
from picluster.state.apt import APT_GET

REBOOT_REQUIRED = "/var/run/reboot-required"
#: apt-get update into a private copy of the lists, then simulate dist-upgrade against it (exit 4: no update).
SIMULATE = (
    "d=$(mktemp -d /var/tmp/picluster-apt.XXXXXX) || exit 5; trap 'rm -rf \"$d\"' EXIT; "
    "cp -a /var/lib/apt/lists/. \"$d/\" 2>/dev/null; rm -f \"$d/lock\"; mkdir -p \"$d/partial\"; "
    "chown -R _apt:root \"$d/partial\" 2>/dev/null; chmod 755 \"$d\"; "
    "apt-get -q -o Dir::State::Lists=\"$d\" update >/dev/null 2>\"$d/err\" || { tail -n 5 \"$d/err\"; exit 4; }; "
    "apt-get -s -o Dir::State::Lists=\"$d\" -o Debug::NoLocking=1 dist-upgrade"
)
HELD = "apt-mark showhold"
NO_UPDATE = 4

# `Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])`; a new package has no [old].
_INST = re.compile(r"^Inst (?P<name>\S+) (?:\[(?P<old>[^\]]*)\] )?\((?P<new>\S+)")
_REMV = re.compile(r"^Remv (?P<name>\S+)(?: \[(?P<old>[^\]]*)\])?")


@dataclass(frozen=True)
class Upgrade:
    """One package `apt-get dist-upgrade` would touch: old version ("" when new), new version ("" when removed)."""

    name: str
    old: str
    new: str

    def line(self) -> str:
        """Return the package as a diff line."""
        if not self.new:
            return f"- {self.name} {self.old}"
        if not self.old:
            return f"+ {self.name} {self.new}"
        return f"~ {self.name} {self.old} -> {self.new}"


def parse_simulation(text: str) -> list[Upgrade]:
    """Return what `apt-get -s dist-upgrade` would install, upgrade or remove, in its order."""
    out: list[Upgrade] = []
    for line in text.splitlines():
        m = _INST.match(line)
        if m:
            out.append(Upgrade(m["name"], m["old"] or "", m["new"]))
            continue
        m = _REMV.match(line)
        if m:
            out.append(Upgrade(m["name"], m["old"] or "", ""))
    return out


@dataclass(frozen=True)
class UpgradeFacts:
    """What an upgrade would do, and the packages on hold (which it leaves)."""

    upgrades: tuple[Upgrade, ...]
    held: tuple[str, ...]
    updated: bool


def read_upgrades(sim: ProbeOutput, held: ProbeOutput) -> tuple[tuple[Upgrade, ...], tuple[str, ...]]:
    """Type the simulation and the hold list; raise StepError when the archive could not be read."""
    if sim.exit_code == NO_UPDATE:
        raise StepError(f"apt-get update failed: {sim.stdout.strip()[-300:]}")
    if not sim.ok:
        raise StepError(f"apt-get -s dist-upgrade failed (exit {sim.exit_code}): {sim.stdout.strip()[-300:]}")
    return tuple(parse_simulation(sim.stdout)), tuple(sorted(held.stdout.split()))


class AptUpgrade:
    """Upgrade the installed packages as `apt-get dist-upgrade` does; packages on hold stay as they are."""

    name = "apt dist-upgrade"

    def probes(self) -> Mapping[str, str]:
        """Simulate the upgrade against fresh private lists; list the holds."""
        return {"sim": SIMULATE, "held": HELD}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> UpgradeFacts:
        """Type the outputs."""
        upgrades, held = read_upgrades(outputs["sim"], outputs["held"])
        return UpgradeFacts(upgrades, held, APT_UPDATED in marks)

    def decide(self, facts: UpgradeFacts) -> Decision:
        """Nothing to upgrade, or the packages and the commands."""
        kept = f" (held, left as they are: {', '.join(facts.held)})" if facts.held else ""
        if not facts.upgrades:
            return Ok(f"every package is up to date{kept}")
        commands = [] if facts.updated else [Command(f"{APT_GET} update")]
        commands.append(Command(f"{APT_GET} dist-upgrade"))
        diff = "\n".join(u.line() for u in facts.upgrades) + (f"\n{kept.strip(' ()')}" if kept else "")
        return Change(diff, commands, sets=frozenset({APT_UPDATED}))


@dataclass(frozen=True)
class RequiredFacts:
    """Whether the host asks for a reboot (and for which packages), and its boot id."""

    required: bool
    packages: tuple[str, ...]
    boot_id: str


class RebootIfRequired:
    """Reboot when the host says it needs one (/var/run/reboot-required); the runner waits until it is back."""

    name = "reboot if the host requires it"

    def probes(self) -> Mapping[str, str]:
        """Read the flag file, the packages that asked, and the boot id."""
        return {"required": f"test -e {REBOOT_REQUIRED}", "pkgs": f"cat {REBOOT_REQUIRED}.pkgs 2>/dev/null || true",
                "boot_id": BOOT_ID}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RequiredFacts:
        """Type the outputs."""
        return RequiredFacts(outputs["required"].ok, tuple(dict.fromkeys(outputs["pkgs"].stdout.split())),
                             outputs["boot_id"].stdout.strip())

    def decide(self, facts: RequiredFacts) -> Decision:
        """Reboot only when the flag is there."""
        if not facts.required:
            return Ok(f"no {REBOOT_REQUIRED}: no reboot needed")
        why = f" (asked by {', '.join(facts.packages)})" if facts.packages else ""
        script = reboot_script("picluster-update-reboot", "picluster: reboot required by an upgrade")
        return Change(f"reboot{why} (boot {facts.boot_id[:8]}), then wait until the host is back", [Command(script)],
                      sets=frozenset({rebooting_mark(facts.boot_id)}))
