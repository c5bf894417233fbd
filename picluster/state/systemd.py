"""systemd services: enabled, running, restarted after their files changed in this run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import UNITS_CHANGED, Change, Command, Decision, Ok, ProbeOutput, changed_mark
from picluster.state._fs import q


@dataclass(frozen=True)
class ServiceFacts:
    """What systemctl says about the unit, and what earlier steps of this run changed."""

    enabled_state: str
    is_enabled: bool
    active_state: str
    units_changed: bool
    restart_due: bool


class Service:
    """Ensure a systemd unit is enabled and/or running (None leaves that unmanaged).

    A `systemctl daemon-reload` runs first when a unit file changed earlier in this run.

    + restart_on: paths whose change earlier in this run restarts the (running) unit

    Example: ``Service("k3s", enabled=True, running=True, restart_on=["/etc/rancher/k3s/config.yaml"])``
    """

    def __init__(
        self,
        unit: str,
        *,
        enabled: bool | None = None,
        running: bool | None = None,
        restart_on: Sequence[str] = (),
    ) -> None:
        self.unit = unit
        self.enabled, self.running = enabled, running
        self.restart_on = tuple(restart_on)

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"service {self.unit}"

    def probes(self) -> Mapping[str, str]:
        """Ask systemctl whether the unit is enabled and active."""
        return {
            "enabled": f"systemctl is-enabled -- {q(self.unit)}",
            "active": f"systemctl is-active -- {q(self.unit)}",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> ServiceFacts:
        """Type the probe outputs and the relevant marks."""
        enabled = outputs["enabled"]
        return ServiceFacts(
            enabled_state=enabled.stdout.strip() or "not-found",
            is_enabled=enabled.ok,
            active_state=outputs["active"].stdout.strip() or "unknown",
            units_changed=UNITS_CHANGED in marks,
            restart_due=any(changed_mark(p) in marks for p in self.restart_on),
        )

    def decide(self, facts: ServiceFacts) -> Decision:
        """Compare the wanted and the actual state."""
        unit = q(self.unit)
        diff: list[str] = []
        commands: list[Command] = []
        clears: frozenset[str] = frozenset()
        # Unit files changed earlier in this run?
        if facts.units_changed:
            diff.append("unit files changed: daemon-reload")
            commands.append(Command("systemctl daemon-reload"))
            clears = frozenset({UNITS_CHANGED})
        # Want enabled and isn't (or the reverse)?
        if self.enabled is True and not facts.is_enabled:
            diff.append(f"enable {self.unit} (is {facts.enabled_state})")
            commands.append(Command(f"systemctl enable -- {unit}"))
        elif self.enabled is False and facts.is_enabled and facts.enabled_state != "static":
            diff.append(f"disable {self.unit} (is {facts.enabled_state})")
            commands.append(Command(f"systemctl disable -- {unit}"))
        active = facts.active_state == "active"
        if self.running is True and not active:
            diff.append(f"start {self.unit} (is {facts.active_state})")
            # NOTE: `systemctl start` exits 0 when a unit's Condition*= fails; the unit then stays inactive
            # and every run would "start" it again, so a start that did not take fails the step here.
            commands.append(Command(
                f"systemctl start -- {unit} && {{ systemctl is-active --quiet -- {unit} || "
                f"{{ echo {q(self.unit + ' did not stay active after start:')} >&2; "
                f"systemctl status --no-pager --lines=5 -- {unit} >&2; exit 1; }}; }}"))
        elif self.running is False and active:
            diff.append(f"stop {self.unit}")
            commands.append(Command(f"systemctl stop -- {unit}"))
        elif active and facts.restart_due:
            diff.append(f"restart {self.unit} (its files changed: {', '.join(self.restart_on)})")
            commands.append(Command(f"systemctl restart -- {unit}"))
        if not commands:
            return Ok(f"service {self.unit} is {facts.enabled_state} and {facts.active_state}")
        return Change("\n".join(diff), commands, clears=clears)
