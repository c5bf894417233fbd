"""`k3s.stop` / `k3s.start`: K3S stopped agents first, then servers (service stop, then k3s-killall.sh, as the
reference's k3s_stop.yml does), or started servers first, then agents, and every started node waited Ready
through the API (without a kubeconfig or an API that answers, the wait is an explicit skip with the reason).

Each is a `Stage` of host phases in that order plus, for the start, a controller step; `run_stage_with_gate`
runs it and its checks (`base` after a stop: K3S's own checks expect it running; `k3s` after a start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from picluster.facts import k3s_unit
from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, Change, Decision, StepError
from picluster.remote.phases import ControllerContext, HostPhase, Phase, RunOptions, controller_steps
from picluster.stages import Phases, Stage
from picluster.state.k3s_service import NOT_INSTALLED, K3sStarted, K3sStopped
from picluster.state.skip import skipped

READY_TIMEOUT_S = 300.0


def _unit(host: Host) -> str:
    unit = k3s_unit(host.role)
    assert unit is not None, host.role
    return unit


def _role(role: str) -> Callable[[Host], bool]:
    return lambda host: host.role == role


def _on(role: str, name: str, step: Callable[[str], AnyStep]) -> HostPhase[Host]:
    return HostPhase(name, lambda h: [step(_unit(h))], applies=_role(role))


def _stop(inv: Inventory, options: RunOptions) -> list[Phase]:
    return [_on("agent", "stop agents", K3sStopped), _on("server", "stop servers", K3sStopped)]


@dataclass(frozen=True)
class ReadyFacts:
    """The nodes to wait for (those this run started or found running), the kubeconfig, and why not."""

    nodes: tuple[str, ...]
    servers: tuple[str, ...]
    kubeconfig: Path
    has_kubeconfig: bool
    not_installed: tuple[str, ...]


@dataclass(frozen=True)
class WaitFor(Change):
    """The nodes to wait for."""

    nodes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()


class WaitReady:
    """Every K3S node of the run Ready in the API (bounded); an explicit skip without a kubeconfig or API."""

    name = "nodes Ready"

    def __init__(self, kubeconfig: Path, timeout: float = READY_TIMEOUT_S, poll: float = 2.0) -> None:
        self.kubeconfig, self.timeout, self.poll = kubeconfig, timeout, poll

    def facts(self, ctx: ControllerContext) -> ReadyFacts:
        """The run's K3S nodes, and whether their host steps found K3S installed."""
        hosts = [h for h in ctx.hosts if getattr(h, "role", "") in ("server", "agent")]
        rows = ctx.table.rows
        missing = tuple(h.name for h in hosts if h.name in rows and any(
            s.status == "skipped" and NOT_INSTALLED in s.reason for s in rows[h.name].steps))
        return ReadyFacts(tuple(h.name for h in hosts if h.name not in missing),
                          tuple(h.name for h in hosts if getattr(h, "role", "") == "server"),
                          self.kubeconfig, self.kubeconfig.is_file(), missing)

    def decide(self, facts: ReadyFacts) -> Decision:
        """Skip with the reason, or the nodes to wait for."""
        if not facts.nodes:
            return skipped(f"no node of this run has K3S installed ({', '.join(facts.not_installed)}): "
                           "nothing to wait for")
        if not facts.has_kubeconfig:
            return skipped(f"no kubeconfig at {facts.kubeconfig} (the k3s stage fetches it): the wait for "
                           f"Ready is not done for {', '.join(facts.nodes)}")
        return WaitFor(f"wait until Ready (at most {self.timeout:.0f}s): {', '.join(facts.nodes)}", [],
                       nodes=facts.nodes, servers=facts.servers)

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """Wait through the API; its errors fail the step with the API's words."""
        from picluster.kube import Kube, KubeError
        from picluster.kube.wait import wait_ready

        assert isinstance(change, WaitFor)
        try:
            wait_ready(Kube(self.kubeconfig), change.nodes, self.timeout, servers=change.servers,
                       interval=self.poll, progress=ctx.options.progress)
        except KubeError as err:
            raise StepError(str(err) or type(err).__name__) from None
        return f"Ready: {', '.join(change.nodes)}"


def kubeconfig_for(inv: Inventory, options: RunOptions) -> Path:
    """The kubeconfig the run uses: the option, else where the k3s stage keeps it."""
    from picluster.stages.k3s import kubeconfig_path

    return options.kubeconfig or kubeconfig_path(inv)


def start_phases(ready_timeout: float = READY_TIMEOUT_S, poll: float = 2.0) -> Phases:
    """The phases of `k3s.start`: servers, then agents, then the wait for Ready."""
    def phases(inv: Inventory, options: RunOptions) -> Sequence[Phase]:
        return [_on("server", "start servers", K3sStarted), _on("agent", "start agents", K3sStarted),
                controller_steps("wait Ready", WaitReady(kubeconfig_for(inv, options), ready_timeout, poll))]
    return phases


STOP = Stage("k3s-stop", ("server", "agent"), "stop K3S: agents, then servers (service stop, k3s-killall.sh)",
             _stop, gate="base")


def start_stage(ready_timeout: float = READY_TIMEOUT_S, poll: float = 2.0) -> Stage:
    """The `k3s.start` stage with its wait bound."""
    return Stage("k3s-start", ("server", "agent"), "start K3S: servers, then agents, then wait Ready",
                 start_phases(ready_timeout, poll), gate="k3s")
