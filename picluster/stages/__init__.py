"""The stages of `cluster.up`, in order: which hosts each one acts on, its steps and its gate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, HostResult

Plan = Callable[[Inventory], Callable[[Host], Sequence[AnyStep]]]
# Work a stage does from the controller itself (not over SSH), after its hosts: one result row "controller".
ControllerRun = Callable[[Inventory, bool], HostResult]


@dataclass(frozen=True)
class Stage:
    """One stage: the roles it touches, how it plans each host, and the testinfra gate that follows."""

    name: str
    roles: tuple[str, ...]
    summary: str
    plan: Plan | None = None
    gate: str | None = None  # runs tests/infra/test_<gate>.py after the stage
    issue: int | None = None
    controller: ControllerRun | None = None  # (inventory, dry_run) -> the controller's result, after the hosts

    @property
    def built(self) -> bool:
        return self.plan is not None


def _preflight_plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    from picluster.state.cloud_init import CloudInitDone

    return lambda host: [CloudInitDone()]


def _os_plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    from picluster.stages.os import plan

    return plan(inv)


def _gateway_plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    from picluster.stages.gateway import plan

    return plan(inv)


def _k3s_plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    from picluster.stages.k3s import plan

    return plan(inv)


def _apps_plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    from picluster.stages.backup import plan
    from picluster.stages.k3s import local_path_kept_non_default

    backups = plan(inv)
    return lambda host: [*backups(host), *local_path_kept_non_default(host)]


def _apps_releases(inv: Inventory, dry_run: bool) -> HostResult:
    from picluster.stages.apps.engine import run_releases

    return run_releases(inv, dry_run=dry_run)


PREFLIGHT = Stage("preflight", ("gateway", "server", "agent"),
                  "every host answers over SSH and cloud-init has finished", plan=_preflight_plan, gate="base")

# Not built yet: each names the issue that builds it, and `cluster.up` reports it as skipped.
STAGES: tuple[Stage, ...] = (
    Stage("os", ("gateway", "server", "agent"), "packages, time, kernel settings, SSH hardening",
          plan=_os_plan, gate="os", issue=5),
    Stage("gateway", ("gateway",), "firewall, DHCP/DNS, NTP server, external-node logging",
          plan=_gateway_plan, gate="gateway", issue=5),
    Stage("k3s", ("server", "agent"), "K3S server and agents with graceful node shutdown",
          plan=_k3s_plan, gate="k3s", issue=6),
    Stage("apps", ("gateway", "server", "agent"), "backups on the hosts, then the platform's Helm releases",
          plan=_apps_plan, gate="apps", issue=7, controller=_apps_releases),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def select(only: Sequence[str] | None = None, start: str | None = None) -> list[Stage]:
    """The stages to run: all, those named in `only`, or from `start` on; unknown names raise ValueError."""
    for name in [*(only or []), *([start] if start else [])]:
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")
    stages = list(STAGES)
    if start:
        stages = stages[STAGE_NAMES.index(start):]
    if only:
        stages = [s for s in stages if s.name in only]
    return stages
