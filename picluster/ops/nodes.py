"""`node.add HOST` / `node.remove HOST`: one node into the cluster, or out of it.

- add: the gateway stage first (the new host's DHCP reservation and DNS record come from the inventory), then
  preflight, os, k3s and apps on that host alone, each with its checks, then the node waited Ready;
- remove, while the inventory lists the host: cordon, drain (eviction API, PodDisruptionBudgets honoured) and
  delete its Node through the API (an explicit skip without one), then K3S uninstalled and its logs cleaned on
  the host, and with `power_off` the host powered off;
- remove, once the inventory no longer lists it: its Node deleted if the API still has it, and the gateway
  stage run, which drops its reservation and DNS record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from picluster.inventory import Host, Inventory
from picluster.kube import Kube
from picluster.ops.k3s_service import WaitReady, kubeconfig_for
from picluster.ops.up import StageOutcome, Watchers, run_stage_with_gate
from picluster.remote import AnyStep, Change, Command, Decision, Ok, StepError
from picluster.remote.phases import ControllerContext, HostPhase, Phase, RunOptions, controller_steps
from picluster.stages import PREFLIGHT, Stage, by_name
from picluster.state.cleanup import PathsAbsent
from picluster.state.k3s_service import K3sUninstalled
from picluster.state.skip import skipped

LOGS = ("/var/log/pods", "/var/log/containers", "/var/log/fluentbit")


@dataclass(frozen=True)
class NodeFacts:
    """Whether the API answers (else why), and whether it has the node."""

    why_no_api: str
    registered: bool


class TakeOut:
    """Cordon, drain and delete one Node through the API; an explicit skip without an API."""

    def __init__(self, name: str, kubeconfig: Path, *, drain: bool = True, drain_timeout: float = 300.0,
                 poll: float = 2.0) -> None:
        self.node, self.kubeconfig, self.drain, self.drain_timeout, self.poll = (name, kubeconfig, drain,
                                                                                 drain_timeout, poll)

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"take {self.node} out of the cluster" if self.drain else f"delete the Node {self.node}"

    def facts(self, ctx: ControllerContext) -> NodeFacts:
        """Ask the API for the node."""
        from picluster.kube import KubeError
        from picluster.kube.nodes import list_nodes

        if not self.kubeconfig.is_file():
            return NodeFacts(f"no kubeconfig at {self.kubeconfig} (the k3s stage fetches it)", False)
        try:
            names = {n.name for n in list_nodes(Kube(self.kubeconfig, request_timeout=10.0))}
        except KubeError as err:
            return NodeFacts(f"the Kubernetes API does not answer: {err}", False)
        return NodeFacts("", self.node in names)

    def decide(self, facts: NodeFacts) -> Decision:
        """Skip, nothing, or cordon, drain and delete."""
        if facts.why_no_api:
            return skipped(f"{facts.why_no_api}: {self.node} is not cordoned, drained or deleted from the API")
        if not facts.registered:
            return Ok(f"the API has no Node {self.node}")
        what = "cordon, drain (eviction API), delete the Node" if self.drain else "delete the Node"
        return Change(f"{what} {self.node}", [])

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """Do it; a drain that leaves pods stops here, the node stays cordoned."""
        from picluster.kube import KubeError
        from picluster.kube.drain import drain
        from picluster.kube.nodes import cordon

        kube = Kube(self.kubeconfig)
        try:
            if self.drain:
                cordon(kube, self.node)
                report = drain(kube, self.node, self.drain_timeout, poll=self.poll)
                if not report.ok:
                    raise StepError(f"{self.node} stays cordoned: {report.summary()}")
            delete_node(kube, self.node)
        except KubeError as err:
            raise StepError(str(err) or type(err).__name__) from None
        return f"{'cordoned, drained and ' if self.drain else ''}deleted the Node {self.node}"


def delete_node(kube: Kube, name: str) -> None:
    """Delete the Node object (gone already is fine)."""
    from picluster.kube import KubeError
    from picluster.kube.client import is_api_error, status_message

    with kube.core() as core:
        try:
            core.delete_node(name)
        except Exception as err:
            if not is_api_error(err, 404):
                raise KubeError(f"cannot delete the Node {name}: {status_message(err)}") from None


class PowerOff:
    """Power the host off a moment after the command returns (the run does not wait for it)."""

    name = "power off"

    def probes(self) -> dict[str, str]:
        """No facts."""
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        """No facts."""
        return None

    def decide(self, facts: None) -> Decision:
        """Always: asked for."""
        return Change("power off in 2 s", [Command("systemd-run --quiet --on-active=2 "
                                                   "--timer-property=AccuracySec=100ms systemctl poweroff")])


def removal_steps(power_off: bool) -> Callable[[Host], Sequence[AnyStep]]:
    """The host part of a removal: K3S uninstalled, its logs and fluent-bit state cleaned, maybe powered off."""
    def plan(host: Host) -> list[AnyStep]:
        steps: list[AnyStep] = [K3sUninstalled(), PathsAbsent("pod logs and fluent-bit state", LOGS,
                                                              under="/var/log", pattern="*.pos")]
        return [*steps, *([PowerOff()] if power_off else [])]
    return plan


def remove_stage(inv: Inventory, name: str, *, power_off: bool, drain_timeout: float = 300.0) -> Stage:
    """The removal of a host the inventory lists: through the API, then on the host."""
    def phases(inv: Inventory, options: RunOptions) -> list[Phase]:
        step = TakeOut(name, kubeconfig_for(inv, options), drain_timeout=drain_timeout)
        return [controller_steps("take out", step), HostPhase("uninstall", removal_steps(power_off))]

    host = inv.hosts[name]
    return Stage("node-remove", (host.role,), f"take {name} out of the cluster", phases,
                 gate=None if power_off else "os")


def forget_stage(name: str) -> Stage:
    """For a host the inventory no longer lists: its Node deleted if still there, and the gateway stage run."""
    gateway = by_name("gateway")

    def phases(inv: Inventory, options: RunOptions) -> list[Phase]:
        step = TakeOut(name, kubeconfig_for(inv, options), drain=False)
        return [controller_steps("forget the Node", step), *gateway.phases(inv, options)]

    return Stage("node-forget", ("gateway",), f"{name}'s Node, DHCP reservation and DNS record dropped", phases,
                 gate="gateway")


def add_node(inv: Inventory, name: str, options: RunOptions, *, watch: Watchers | None = None,
             ready_timeout: float = 300.0) -> list[StageOutcome]:
    """The gateway stage on the gateway, then preflight, os, k3s and apps on `name` alone, then Ready."""
    host = inv.hosts[name]
    gateway = [h for h in inv.hosts.values() if h.role == "gateway"]
    ready = Stage("node-ready", (host.role,), f"{name} Ready",
                  lambda inv, options: [controller_steps("wait Ready", WaitReady(kubeconfig_for(inv, options),
                                                                                 ready_timeout))])
    plan: list[tuple[Stage, list[Host]]] = [(by_name("gateway"), gateway)]
    plan += [(stage, [host]) for stage in (PREFLIGHT, by_name("os"), by_name("k3s"), by_name("apps"), ready)]
    outcomes: list[StageOutcome] = []
    for stage, hosts in plan:
        failed = next((o.stage.name for o in outcomes if o.failed), None)
        if failed is not None:
            outcomes.append(StageOutcome(stage, [h.name for h in hosts], skipped=f"stage {failed} failed"))
            continue
        outcomes.append(run_stage_with_gate(inv, stage, hosts, options, watch=watch))
    return outcomes
