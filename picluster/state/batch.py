"""Several steps read in one SSH round trip, then decided and applied in order.

A `Batch` is for steps whose facts do not depend on each other's commands (one step's change does
not alter what another one reads). Marks still flow in order: each inner step sees the marks the
ones before it left, so a service after its config file in the same batch restarts when it changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import AnyStep, Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.state._fs import content_probe
from picluster.state.skip import SKIPPED

CONTENT_PROBE = content_probe("").removesuffix("''")


@dataclass(frozen=True)
class BatchFacts:
    """Every inner step's probe outputs, and the marks at the start of the batch."""

    outputs: tuple[Mapping[str, ProbeOutput], ...]
    marks: frozenset[str]


class Batch:
    """Read the facts of `steps` in one round trip; decide each in order; apply what changed, in order.

    The result is one step: `Ok` with every reason (skips first, so they stay visible), or `Change`
    with each changed step's diff under its name.

    Example: ``Batch("kernel settings", [Sysctl("net.ipv4.ip_forward", 1), KernelModule("overlay")])``
    """

    def __init__(self, label: str, steps: Sequence[AnyStep]) -> None:
        if not steps:
            raise ValueError("a batch needs at least one step")
        read = [v for s in steps for v in s.probes().values() if v.startswith(CONTENT_PROBE)]
        shared = sorted({v for v in read if read.count(v) > 1})
        if shared:
            raise ValueError(f"batch {label!r}: several steps read {shared[0].removeprefix(CONTENT_PROBE)}; "
                             "one would write over the other's change: give the file one step")
        self.label = label
        self.steps = list(steps)

    @property
    def name(self) -> str:
        """Return the batch label."""
        return self.label

    def probes(self) -> Mapping[str, str]:
        """Every inner probe, keyed by the step's position."""
        return {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.probes().items()}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> BatchFacts:
        """Split the outputs per step; inner parsing waits for `decide`, where the marks are known."""
        per_step: list[dict[str, ProbeOutput]] = [{} for _ in self.steps]
        for key, out in outputs.items():
            index, _, name = key.partition(".")
            per_step[int(index)][name] = out
        return BatchFacts(tuple(per_step), marks)

    def decide(self, facts: BatchFacts) -> Decision:
        """Decide each step with the marks the earlier ones left; combine."""
        marks = set(facts.marks)
        skips: list[str] = []
        oks: list[str] = []
        diffs: list[str] = []
        commands: list[Command] = []
        for step, outputs in zip(self.steps, facts.outputs, strict=True):
            try:
                decision = step.decide(step.parse(outputs, frozenset(marks)))
            except StepError as e:
                raise StepError(f"{step.name}: {e}") from e
            if isinstance(decision, Ok):
                if decision.reason.startswith(SKIPPED):
                    skips.append(f"{step.name}: {decision.reason.removeprefix(SKIPPED)}")
                else:
                    oks.append(decision.reason)
                continue
            diffs.append(f"[{step.name}]\n{decision.diff}")
            commands.extend(decision.commands)
            marks -= decision.clears
            marks |= decision.sets
        if not commands:
            if skips:
                return Ok(SKIPPED + "; ".join(skips) + (f" (and {len(oks)} ok)" if oks else ""))
            return Ok("; ".join(oks))
        if skips:
            diffs.append("[skipped]\n" + "\n".join(skips))
        return Change(
            "\n".join(diffs),
            commands,
            sets=frozenset(marks - facts.marks),
            clears=frozenset(facts.marks - marks),
        )
