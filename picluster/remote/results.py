"""Results of a stage: per step, per host, per stage; plain data that serialises to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

StepStatus = Literal["ok", "changed", "failed", "skipped"]
HostStatus = Literal["ok", "changed", "failed", "unreachable"]


@dataclass
class CommandError:
    """A command that exited non-zero: what ran, its exit code and the last lines of stderr."""

    command: str
    exit_code: int
    stderr_tail: str


@dataclass
class StepResult:
    """One step on one host: ok with its reason, changed with its diff, or failed with the error."""

    name: str
    status: StepStatus
    duration: float
    reason: str = ""
    diff: str = ""
    commands: list[str] = field(default_factory=list)
    error: CommandError | None = None
    message: str = ""


@dataclass
class HostResult:
    """One host in a stage."""

    host: str
    status: HostStatus
    duration: float
    steps: list[StepResult] = field(default_factory=list)
    message: str = ""
    needs_reboot: bool = False

    @property
    def failed_step(self) -> StepResult | None:
        """Return the step that failed, if any."""
        return next((s for s in self.steps if s.status == "failed"), None)

    def counts(self) -> dict[StepStatus, int]:
        """Return how many steps were ok, changed, failed and skipped."""
        out: dict[StepStatus, int] = {"ok": 0, "changed": 0, "failed": 0, "skipped": 0}
        for s in self.steps:
            out[s.status] += 1
        return out


@dataclass
class StageResult:
    """One stage over many hosts."""

    stage: str
    dry_run: bool
    duration: float
    hosts: list[HostResult] = field(default_factory=list)

    @property
    def failures(self) -> list[HostResult]:
        """Return the hosts that failed or were unreachable."""
        return [h for h in self.hosts if h.status in ("failed", "unreachable")]

    @property
    def changed(self) -> int:
        """Return the number of changed (or, in a dry run, would-change) steps over all hosts."""
        return sum(h.counts()["changed"] for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return asdict(self)


def _describe(h: HostResult) -> str:
    if h.status == "unreachable":
        return f"- {h.host}: unreachable: {h.message}"
    step = h.failed_step
    if step is None:
        return f"- {h.host}: failed: {h.message}"
    lines = [f"- {h.host}: step '{step.name}' failed"]
    if step.error is not None:
        lines.append(f"    command: {step.error.command}")
        lines.append(f"    exit code: {step.error.exit_code}")
        if step.error.stderr_tail:
            lines.append("    stderr (last lines):")
            lines += [f"      {line}" for line in step.error.stderr_tail.splitlines()]
    if step.message:
        lines.append(f"    {step.message}")
    return "\n".join(lines)


class StageFailed(Exception):
    """Raised once, after every host ran: names each failed host, step, command, exit code and stderr."""

    def __init__(self, result: StageResult) -> None:
        self.result = result
        bad = result.failures
        body = "\n".join(_describe(h) for h in bad)
        hint = (
            "What to do: fix the cause shown above (the host's logs have the details), then run the "
            f"stage again; it only changes what still differs. Re-run just these hosts with "
            f"--limit {','.join(h.host for h in bad)}."
        )
        super().__init__(
            f"stage '{result.stage}' failed on {len(bad)} of {len(result.hosts)} hosts:\n{body}\n{hint}"
        )
