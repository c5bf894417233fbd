"""`cluster.reboot`: a rolling reboot, one node at a time, servers first, then agents.

Each node: cordon, drain (Eviction API), reboot over SSH and wait until it answers with a new boot id,
wait Ready (with a new boot ID in the API), uncordon — through `picluster.kube.rolling`. Without a
Kubernetes API (no kubeconfig, the API does not answer, or a node it does not know), the Kubernetes steps
are skipped with the reason and the SSH reboot still runs. The first node that does not come back stops
the roll, and the error names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from picluster.inventory import Host
from picluster.kube import Kube, KubeError
from picluster.kube.rolling import NodeSteps, RollingError, kube_steps, rolling
from picluster.ops.shutdown import Timeline
from picluster.remote.reboot import NotBack, read_boot_id, reboot_script, wait_new_boot

BACK_WAIT_S = 600.0


def rolling_reboot_script() -> str:
    """Return the command that reboots a node of the roll, a moment after the SSH command returns."""
    return reboot_script("picluster-rolling-reboot-$(date +%s)", "picluster: rolling reboot")


def ssh_reboot(host: Host, *, wait_s: float = BACK_WAIT_S, poll_s: float = 1.0,
               reader: Callable[[Host, float], str | None] | None = None,
               command: Callable[[Host, str], str] | None = None) -> float:
    """Reboot one host over SSH and wait (bounded) until it answers with a new boot id; return the seconds."""
    read = reader or read_boot_id
    run = command or _run
    old = read(host, 10.0)
    if not old:
        raise NotBack(f"{host.name} does not answer SSH, so it was not rebooted")
    why = run(host, rolling_reboot_script())
    if why:
        raise NotBack(f"{host.name}: the reboot could not be scheduled: {why}")
    return wait_new_boot(host, old, wait_s=wait_s, poll_s=poll_s, reader=read)  # type: ignore[arg-type]


def _run(host: Host, script: str) -> str:
    from picluster.remote import Unreachable, connect
    from picluster.remote.execute import wrap

    try:
        conn = connect(host.ssh, name=host.name)
    except Unreachable as err:
        return str(err)
    try:
        result = conn.run(wrap(script, sudo=conn.user != "root"), hide=True, warn=True, in_stream=False, timeout=30)
        return "" if result is not None and result.ok else f"exit {result.exited if result else '?'}: " \
            f"{(result.stderr if result else '').strip()[-300:]}"
    finally:
        conn.close()


@dataclass
class RebootRun:
    timeline: Timeline
    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    failed_node: str = ""
    not_started: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "error": self.error, "failed_node": self.failed_node, "done": self.done,
                "not_started": self.not_started, "notes": self.notes,
                "timeline": [e.to_dict() for e in self.timeline.events]}


def skipped_kube_steps(act: Callable[[str], object], reason: str, timeline: Timeline) -> NodeSteps:
    """NodeSteps that only reboot: the Kubernetes steps are recorded as skipped, with the reason."""
    def skip(step: str) -> Callable[[str], None]:
        def run(node: str) -> None:
            timeline.add(node, f"{step} skipped", reason)
        return run

    return NodeSteps(cordon=skip("cordon"), drain=skip("drain"), act=act, wait_ready=skip("wait Ready"),
                     uncordon=skip("uncordon"), act_name="reboot")


def rolling_reboot(
    hosts: Sequence[Host],
    *,
    kube: Kube | None = None,
    kube_note: str = "",
    drain_timeout: float = 300.0,
    ready_timeout: float = 300.0,
    back_timeout: float = BACK_WAIT_S,
    on_event: Callable[[Any], None] | None = None,
    reboot: Callable[[Host], float] | None = None,
    progress: bool = True,
    poll: float = 2.0,
) -> RebootRun:
    """Reboot the K3S nodes among `hosts` one at a time, servers first; stop at the first that fails."""
    run = RebootRun(Timeline(on_event))
    tl = run.timeline
    servers = [h for h in hosts if h.role == "server"]
    agents = [h for h in hosts if h.role == "agent"]
    by_name = {h.name: h for h in servers + agents}
    for h in hosts:
        if not h.is_k3s:
            run.notes.append(f"{h.name}: not a K3S node ({h.role}): not rebooted by the roll")
    do_reboot = reboot or (lambda h: ssh_reboot(h, wait_s=back_timeout))

    def act(node: str) -> None:
        tl.add(node, "reboot")
        took = do_reboot(by_name[node])
        tl.add(node, "back", f"new boot id after {took:.0f}s")

    known: set[str] = set()
    if kube is not None:
        from picluster.kube.nodes import list_nodes

        try:
            known = {n.name for n in list_nodes(kube)}
        except KubeError as err:
            kube, kube_note = None, f"the Kubernetes API does not answer: {err}"
    if kube is not None:
        missing = [name for name in by_name if name not in known]
        if missing:
            kube, kube_note = None, f"{', '.join(missing)} not registered with the API server"
    if kube is None:
        run.notes.append(f"cordon, drain, wait Ready and uncordon skipped: {kube_note or 'no Kubernetes API'}; "
                         "each node is still rebooted over SSH and waited for")
        steps = skipped_kube_steps(act, kube_note or "no Kubernetes API", tl)
    else:
        steps = kube_steps(kube, act, servers=[h.name for h in servers], drain_timeout=drain_timeout,
                           ready_timeout=ready_timeout, act_name="reboot", expect_reboot=True, progress=progress,
                           poll=poll)

    def on_step(node: str, role: str, step: str) -> None:
        if kube is not None and step != "reboot":
            tl.add(node, step)

    try:
        run.done = rolling([h.name for h in servers], [h.name for h in agents], steps, on_step=on_step)
    except RollingError as err:
        run.error, run.failed_node, run.done, run.not_started = str(err), err.node, err.done, err.not_started
        tl.add(err.node, "failed", str(err))
    tl.add("cluster", "done")
    return run
