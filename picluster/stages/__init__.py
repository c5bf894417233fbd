"""The stages of `cluster.up`, in order: the roles each acts on, its phases and its gate.

A stage is host phases (steps on every host at once) and controller phases (work on this machine, which
may run host steps on chosen hosts), run in order by `picluster.remote.phases.run_phases`. A new stage or
operation is a `Stage` whose `phases(inventory, options)` returns them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from picluster.inventory import Inventory
from picluster.remote.phases import HostPhase, Phase, RunOptions

Phases = Callable[[Inventory, RunOptions], Sequence[Phase]]


@dataclass(frozen=True)
class Stage:
    """One stage: the roles it touches, its phases, and the testinfra gate that follows."""

    name: str
    roles: tuple[str, ...]
    summary: str
    phases: Phases
    gate: str | None = None  # runs tests/infra/test_<gate>.py after the stage


def _preflight(inv: Inventory, options: RunOptions) -> list[Phase]:
    from picluster.state.bootloader import UsbBootOrder
    from picluster.state.cloud_init import CloudInitDone

    return [HostPhase("ssh, cloud-init, bootloader", lambda host: [CloudInitDone(), UsbBootOrder()])]


def _os(inv: Inventory, options: RunOptions) -> list[Phase]:
    from picluster.stages.os import plan

    return [HostPhase("os", plan(inv))]


def _gateway(inv: Inventory, options: RunOptions) -> list[Phase]:
    from picluster.stages.gateway import plan

    return [HostPhase("gateway", plan(inv))]


def _k3s(inv: Inventory, options: RunOptions) -> Sequence[Phase]:
    from picluster.stages.k3s import phases

    return phases(inv, options)


def _apps(inv: Inventory, options: RunOptions) -> list[Phase]:
    from picluster.remote.phases import ControllerPhase
    from picluster.stages.apps.engine import run_releases
    from picluster.stages.backup import plan
    from picluster.stages.k3s import local_path_kept_non_default

    backups = plan(inv)
    releases = ControllerPhase("helm releases", lambda ctx: run_releases(
        inv, dry_run=ctx.options.dry_run, only=ctx.options.releases, on_release=ctx.on_step).steps)
    if options.releases_only:
        return [releases]
    return [HostPhase("backups", lambda host: [*backups(host), *local_path_kept_non_default(host)]), releases]


PREFLIGHT = Stage("preflight", ("gateway", "server", "agent"),
                  "every host answers over SSH, cloud-init has finished, the bootloader tries USB", _preflight,
                  gate="base")

STAGES: tuple[Stage, ...] = (
    Stage("os", ("gateway", "server", "agent"), "packages, time, kernel settings, SSH hardening", _os, gate="os"),
    Stage("gateway", ("gateway",), "firewall, DHCP/DNS, NTP server, external-node logging", _gateway,
          gate="gateway"),
    Stage("k3s", ("server", "agent"), "K3S server and agents with graceful node shutdown", _k3s, gate="k3s"),
    Stage("apps", ("gateway", "server", "agent"), "backups on the hosts, then the platform's Helm releases", _apps,
          gate="apps"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def by_name(name: str) -> Stage:
    """Return the stage called `name` (ValueError naming the stages when there is none)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


def select(only: Sequence[str] | None = None, start: str | None = None) -> list[Stage]:
    """The stages to run: all, those named in `only`, or from `start` on; unknown names raise ValueError."""
    for name in [*(only or []), *([start] if start else [])]:
        by_name(name)
    stages = list(STAGES)
    if start:
        stages = stages[STAGE_NAMES.index(start):]
    if only:
        stages = [s for s in stages if s.name in only]
    return stages
