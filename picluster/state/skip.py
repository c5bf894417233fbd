"""Explicit skips: a step the host cannot do is `Ok` with a reason that starts with "skipped: ".

The runner reports such a step with the status "skipped" (see `picluster.remote.skip`), so reports and
the JSON results show it, never as a silent pass. `OnlyIf` wraps any step with a probe that decides,
from the host's facts, whether the step can run there at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from picluster.remote import SKIPPED, AnyStep, Decision, Ok, ProbeOutput
from picluster.remote import skip as skipped

__all__ = ["IN_CONTAINER", "SKIPPED", "NotConfigured", "OnlyIf", "is_skipped", "skipped"]

IN_CONTAINER = "systemd-detect-virt --quiet --container"


def is_skipped(decision: Decision) -> bool:
    """Return whether a decision is an explicit skip."""
    return isinstance(decision, Ok) and decision.skipped


@dataclass(frozen=True)
class OnlyIfFacts:
    """Whether the condition held, and the inner step's facts (None when it did not)."""

    holds: bool
    inner: Any


class OnlyIf:
    """Run `step` only where the probe `condition` exits 0; elsewhere an explicit skip with `reason`.

    Both are read in the same round trip as the step's own probes.

    Example: ``OnlyIf(Apt("fluent-bit"), "apt-cache show fluent-bit", "no candidate for fluent-bit")``

    + skip: False makes "condition does not hold" a plain `Ok` (nothing to do there), not a skip
    """

    def __init__(self, step: AnyStep, condition: str, reason: str, *, skip: bool = True) -> None:
        self.step = step
        self.condition = condition
        self.reason = reason
        self.skip = skip

    @property
    def name(self) -> str:
        """Return the inner step's label."""
        return str(self.step.name)

    def probes(self) -> Mapping[str, str]:
        """The inner step's probes plus the condition."""
        return {**{f"inner.{k}": v for k, v in self.step.probes().items()}, "only_if": self.condition}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> OnlyIfFacts:
        """Parse the inner facts only when the condition held."""
        if not outputs["only_if"].ok:
            return OnlyIfFacts(False, None)
        inner = {k.removeprefix("inner."): v for k, v in outputs.items() if k.startswith("inner.")}
        return OnlyIfFacts(True, self.step.parse(inner, marks))

    def decide(self, facts: OnlyIfFacts) -> Decision:
        """Skip with the reason, or the inner step's decision."""
        if not facts.holds:
            return skipped(self.reason) if self.skip else Ok(self.reason)
        return self.step.decide(facts.inner)


class NotConfigured:
    """A part the inventory does not ask for: an explicit skip with the reason, reading no facts."""

    def __init__(self, label: str, reason: str) -> None:
        self.label, self.reason = label, reason

    @property
    def name(self) -> str:
        """Return the step label."""
        return self.label

    def probes(self) -> Mapping[str, str]:
        """No facts."""
        return {}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> None:
        """No facts."""
        return None

    def decide(self, facts: object) -> Decision:
        """Skip with the reason."""
        return skipped(self.reason)
