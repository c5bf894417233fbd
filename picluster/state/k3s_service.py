"""K3S as a service: stopped the reference's way (service stop, then k3s-killall.sh), started, or uninstalled.

Each is an explicit skip on a node where K3S is not installed (no /usr/local/bin/k3s), except the uninstall,
for which "nothing installed" is simply nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.facts import K3S_BIN
from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import q
from picluster.state.skip import skipped

KILLALL = "/usr/local/bin/k3s-killall.sh"
UNINSTALL = {"server": "/usr/local/bin/k3s-uninstall.sh", "agent": "/usr/local/bin/k3s-agent-uninstall.sh"}
#: Processes K3S leaves behind a service stop (the pods' shims): what k3s-killall.sh kills.
SHIMS = "pgrep -c -f 'containerd-shim-runc' || true"
NOT_INSTALLED = f"k3s is not installed on this node (no {K3S_BIN})"


@dataclass(frozen=True)
class K3sState:
    """Whether K3S is installed, its unit's state, how many shims run, whether the killall script is there."""

    installed: bool
    active: str
    shims: int
    killall: bool


def _state(outputs: Mapping[str, ProbeOutput]) -> K3sState:
    shims = outputs["shims"].stdout.strip()
    return K3sState(outputs["installed"].ok, outputs["active"].stdout.strip() or "unknown",
                    int(shims) if shims.isdigit() else 0, outputs["killall"].ok)


class K3sStopped:
    """Stop the node's K3S unit, then run k3s-killall.sh so no pod keeps running (reference k3s_stop.yml)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"stop {self.unit}"

    def probes(self) -> Mapping[str, str]:
        """Read whether K3S is installed and what still runs."""
        return {"installed": f"test -x {K3S_BIN}", "active": f"systemctl is-active -- {q(self.unit)}",
                "shims": SHIMS, "killall": f"test -x {KILLALL}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> K3sState:
        """Type the outputs."""
        return _state(outputs)

    def decide(self, facts: K3sState) -> Decision:
        """Stop the unit and kill what is left, or nothing when all is stopped."""
        if not facts.installed:
            return skipped(NOT_INSTALLED)
        running = facts.active in ("active", "activating", "reloading")
        if not running and not facts.shims:
            return Ok(f"{self.unit} is {facts.active} and no container runs")
        diff, commands = [], []
        if running:
            diff.append(f"stop {self.unit} (is {facts.active})")
            commands.append(Command(f"systemctl stop -- {q(self.unit)}"))
        if facts.killall:
            diff.append(f"{KILLALL} ({facts.shims} container shims running)")
            commands.append(Command(KILLALL))
        return Change("\n".join(diff), commands)


class K3sStarted:
    """Start the node's K3S unit (reference k3s_start.yml); an explicit skip where K3S is not installed."""

    def __init__(self, unit: str) -> None:
        self.unit = unit

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"start {self.unit}"

    def probes(self) -> Mapping[str, str]:
        """Read whether K3S is installed and its unit's state."""
        return {"installed": f"test -x {K3S_BIN}", "active": f"systemctl is-active -- {q(self.unit)}",
                "shims": "echo 0", "killall": "true"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> K3sState:
        """Type the outputs."""
        return _state(outputs)

    def decide(self, facts: K3sState) -> Decision:
        """Start it unless it runs."""
        if not facts.installed:
            return skipped(NOT_INSTALLED)
        if facts.active == "active":
            return Ok(f"{self.unit} is active")
        unit = q(self.unit)
        return Change(f"start {self.unit} (is {facts.active})", [Command(
            f"systemctl start -- {unit} && systemctl is-active --quiet -- {unit} || "
            f"{{ echo {q(self.unit + ' did not stay active after start')} >&2; exit 1; }}")])


@dataclass(frozen=True)
class UninstallFacts:
    """Which of K3S's uninstall scripts is on the node (none: K3S is not installed), and the binary."""

    script: str | None
    binary: bool


class K3sUninstalled:
    """K3S removed with its official uninstall script (k3s-uninstall.sh on servers, k3s-agent-uninstall.sh on
    agents), which stops it, removes its units, binaries, data and network interfaces, and itself."""

    name = "uninstall k3s"

    def probes(self) -> Mapping[str, str]:
        """Find the uninstall scripts and the binary."""
        return {role: f"test -x {path}" for role, path in UNINSTALL.items()} | {"binary": f"test -e {K3S_BIN}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> UninstallFacts:
        """Type the outputs (a node that ran both kinds has the server's script, which removes all)."""
        script = next((UNINSTALL[r] for r in ("server", "agent") if outputs[r].ok), None)
        return UninstallFacts(script, outputs["binary"].ok)

    def decide(self, facts: UninstallFacts) -> Decision:
        """Run the script, or nothing when K3S is gone."""
        if facts.script is None:
            if facts.binary:
                return Change(f"remove {K3S_BIN} (no uninstall script beside it)", [Command(f"rm -f -- {K3S_BIN}")])
            return Ok("k3s is not installed")
        return Change(f"run {facts.script}", [Command(facts.script)])
