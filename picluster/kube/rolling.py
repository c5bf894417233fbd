"""One node at a time, servers first, then agents: cordon, drain, act (upgrade or reboot), wait Ready, uncordon.

Pure orchestration over callbacks, so the SSH part (upgrade K3S, reboot) plugs in from the stages and ops
layers; `kube_steps` builds the Kubernetes callbacks. The first failing step stops the roll and says which
node, which step, what is done and what was not started; that node stays cordoned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from picluster.kube.client import Kube, KubeError

STEPS = ("cordon", "drain", "act", "wait_ready", "uncordon")
Step = Callable[[str], object]


@dataclass(frozen=True)
class NodeSteps:
    """The five callbacks applied to each node, in this order; each raises to stop the roll."""

    cordon: Step
    drain: Step
    act: Step
    wait_ready: Step
    uncordon: Step
    act_name: str = "upgrade"


class RollingError(Exception):
    """A rolling operation stopped: `node` failed at `step`; `done` were finished, `not_started` were not."""

    def __init__(self, message: str, node: str, step: str, done: list[str], not_started: list[str]) -> None:
        super().__init__(message)
        self.node = node
        self.step = step
        self.done = done
        self.not_started = not_started


def rolling_order(servers: Iterable[str], agents: Iterable[str]) -> list[tuple[str, str]]:
    """`(node, role)` in the order to take them down: every server one at a time, then every agent."""
    order = [(name, "server") for name in servers] + [(name, "agent") for name in agents]
    names = [name for name, _ in order]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"nodes listed more than once (as server and agent?): {', '.join(twice)}")
    return order


def rolling(
    servers: Iterable[str],
    agents: Iterable[str],
    steps: NodeSteps,
    *,
    on_step: Callable[[str, str, str], None] | None = None,
) -> list[str]:
    """Apply the steps to each node in `rolling_order`; return the nodes done, or raise RollingError.

    `on_step(node, role, step)` is called before each step (for progress and timelines).
    """
    order = rolling_order(servers, agents)
    done: list[str] = []
    for i, (node, role) in enumerate(order):
        for step in STEPS:
            label = steps.act_name if step == "act" else step
            if on_step:
                on_step(node, role, label)
            try:
                getattr(steps, step)(node)
            except Exception as err:
                rest = [name for name, _ in order[i + 1:]]
                left = "" if step in ("cordon", "uncordon") else f"; {node} stays cordoned"
                message = (f"{node} ({role}): {label.replace('_', ' ')} failed: {err}{left}; "
                           f"done: {', '.join(done) or 'none'}; not started: {', '.join(rest) or 'none'}")
                raise RollingError(message, node, label, done, rest) from err
        done.append(node)
    return done


class DrainFailed(KubeError):
    """A drain left pods that had to go."""


def kube_steps(
    kube: Kube,
    act: Step,
    *,
    servers: Iterable[str] = (),
    drain_timeout: float = 300.0,
    ready_timeout: float = 300.0,
    force: bool = False,
    act_name: str = "upgrade",
    expect_version: str | None = None,
    expect_reboot: bool = False,
    progress: bool = True,
    poll: float = 2.0,
) -> NodeSteps:
    """NodeSteps whose cordon, drain, wait Ready and uncordon go through the API; `act` is the SSH part.

    A node keeps showing Ready for a while after its K3S restarts, so the wait also requires what the act
    changes: `expect_version` (the kubelet version after an upgrade) or `expect_reboot` (a new boot ID).
    """
    from picluster.kube.drain import Backoff, drain
    from picluster.kube.nodes import NodeInfo, cordon, get_node, uncordon
    from picluster.kube.wait import wait_ready

    server_names = frozenset(servers)
    before: dict[str, NodeInfo] = {}

    def _cordon(node: str) -> None:
        before[node] = get_node(kube, node)
        cordon(kube, node)

    def _changed(node: NodeInfo) -> str | None:
        if expect_version and node.kubelet_version != expect_version:
            return f"its kubelet is {node.kubelet_version or 'unknown'}, not {expect_version} yet"
        old = before.get(node.name)
        if expect_reboot and old is not None and node.boot_id == old.boot_id:
            return "it has not rebooted yet (same boot ID)"
        return None

    def _drain(node: str) -> None:
        report = drain(kube, node, drain_timeout, force=force, poll=poll,
                       backoff=Backoff(initial=min(1.0, poll), maximum=max(poll, 10.0)))
        if not report.ok:
            raise DrainFailed(report.summary())

    def _wait(node: str) -> None:
        wait_ready(kube, [node], ready_timeout, servers=server_names, interval=poll, check=_changed,
                   progress=progress)

    return NodeSteps(cordon=_cordon, drain=_drain, act=act, wait_ready=_wait,
                     uncordon=lambda node: uncordon(kube, node), act_name=act_name)
