"""What a step is: probes that read facts, a pure decision, and the commands that apply it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

F = TypeVar("F")

#: Marks a step leaves on the per-host run; later steps read them as facts.
APT_UPDATED = "apt-updated"
UNITS_CHANGED = "systemd-units-changed"
NEEDS_REBOOT = "needs-reboot"


def changed_mark(path: str) -> str:
    """Return the mark a step leaves when it changes the content of `path`."""
    return f"changed:{path}"


@dataclass(frozen=True)
class ProbeOutput:
    """What one read-only probe printed on stdout, and its exit code."""

    stdout: str
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        """Return whether the probe exited 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class Command:
    """One POSIX sh script to run on the host (as root); `stdin` carries data such as file content.

    `stdin_file` instead streams a local file as base64 lines, read as it is sent: a large upload (the
    air-gap images) never sits in memory.
    """

    script: str
    stdin: bytes | None = None
    stdin_file: Path | None = None


@dataclass(frozen=True)
class Ok:
    """Nothing to do, and why."""

    reason: str

    @property
    def skipped(self) -> bool:
        """Whether this is an explicit skip: a step the host cannot do (see `skip`)."""
        return self.reason.startswith(SKIPPED)


#: An `Ok` whose reason starts with this is a skip: the runner reports it with the status "skipped".
SKIPPED = "skipped: "


def skip(reason: str) -> Ok:
    """Return the decision of a step this host cannot do, with the reason (a visible skip, not a pass)."""
    return Ok(SKIPPED + reason)


@dataclass(frozen=True)
class Change:
    """What differs (`diff`), the commands that fix it, and the marks it leaves on the host's run."""

    diff: str
    commands: Sequence[Command]
    sets: frozenset[str] = frozenset()
    clears: frozenset[str] = frozenset()


Decision = Ok | Change


class StepError(Exception):
    """A step cannot decide (a fact makes the desired state unreachable); the message says why."""


class Step(Protocol[F]):
    """An idempotent step: `probes` read facts in one round trip, `parse` types them, `decide` is pure."""

    @property
    def name(self) -> str:
        """Return a short label, such as ``sysctl net.ipv4.ip_forward``."""
        ...

    def probes(self) -> Mapping[str, str]:
        """Return read-only shell commands by name; their stdout and exit code become the facts."""
        ...

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> F:
        """Turn probe outputs and the marks earlier steps left on this host's run into typed facts."""
        ...

    def decide(self, facts: F) -> Decision:
        """Return `Ok` with the reason, or `Change` with the diff and commands; no I/O."""
        ...


AnyStep = Step[Any]


@dataclass
class HostRun:
    """Per host, per run: the marks steps left so far (apt updated, units changed, reboot needed), the step
    running now, and whether the run was stopped (Ctrl-C: no further step starts)."""

    marks: set[str] = field(default_factory=set)
    current: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, change: Change) -> None:
        """Apply a change's marks."""
        self.marks -= change.clears
        self.marks |= change.sets
