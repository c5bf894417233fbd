"""`cluster.update`: OS packages upgraded on every host of the run, held packages left as they are.

Phases of one `Stage`, run with its `os` checks by `run_stage_with_gate`:

1. download (every host at once): what `apt-get -s dist-upgrade` would install is fetched into apt's cache,
   so the installs later, one host at a time, do not wait on the network;
2. the gateway on its own, first: its outage (DNS, DHCP, NTP, the way out) is announced on the timeline
   and in its journal, and kept short: the packages are already there, and a reboot happens only when the
   host asks for one (/var/run/reboot-required);
3. the K3S nodes one at a time, servers first: cordon, drain through the eviction API (PodDisruptionBudgets
   honoured), upgrade, reboot only when required, wait Ready (with a new boot id after a reboot), uncordon.
   Without a kubeconfig or an API that answers, the Kubernetes steps are explicit skips with the reason and
   the nodes are still upgraded one at a time.

A host with nothing to upgrade and no pending reboot is left alone: a second run changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from picluster.inventory import Host, Inventory
from picluster.kube import Kube
from picluster.kube.nodes import NodeInfo
from picluster.kube.rolling import NodeSteps
from picluster.ops.timeline import Timeline
from picluster.remote import AnyStep, Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.remote.phases import ControllerContext, HostPhase, Phase, RunOptions, controller_steps
from picluster.stages import Stage
from picluster.state.apt import APT_GET
from picluster.state.upgrade import (
    HELD,
    REBOOT_REQUIRED,
    SIMULATE,
    AptUpgrade,
    RebootIfRequired,
    Upgrade,
    read_upgrades,
)

ANNOUNCE = ("picluster cluster.update: the gateway is being upgraded; DNS, DHCP, NTP and the way out may stop "
            "for a moment")


class AptDownload:
    """Fetch what `apt-get dist-upgrade` would install into apt's cache (installs nothing)."""

    name = "download upgrades"

    def probes(self) -> Mapping[str, str]:
        """Simulate the upgrade against fresh private lists; list the holds."""
        return {"sim": SIMULATE, "held": HELD}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> tuple[Upgrade, ...]:
        """What an upgrade would install."""
        return read_upgrades(outputs["sim"], outputs["held"])[0]

    def decide(self, facts: tuple[Upgrade, ...]) -> Decision:
        """Nothing to fetch, or the packages to fetch."""
        wanted = [u for u in facts if u.new]
        if not wanted:
            return Ok("nothing to download: every package is up to date")
        return Change(f"download {len(wanted)} packages: {', '.join(u.name for u in wanted)}",
                      [Command(f"{APT_GET} update"), Command(f"{APT_GET} --download-only dist-upgrade")])


def upgrade_plan(host: Host) -> list[AnyStep]:
    """The host steps of one host's turn: upgrade, then reboot if it asks for one."""
    return [AptUpgrade(), RebootIfRequired()]


@dataclass(frozen=True)
class Pending:
    """What one host would do: its upgrades, whether it asks for a reboot already."""

    host: str
    role: str
    upgrades: tuple[Upgrade, ...]
    reboot: bool

    @property
    def any(self) -> bool:
        return bool(self.upgrades) or self.reboot

    def line(self) -> str:
        what = [u.line().replace("\n", " ") for u in self.upgrades]
        pkgs = f"{len(self.upgrades)} packages ({'; '.join(what)})" if what else "no package"
        return f"{self.host}: {pkgs}" + (f", and {REBOOT_REQUIRED} asks for a reboot" if self.reboot else "")


@dataclass(frozen=True)
class UpdateFacts:
    """Each host's pending work, in inventory order, and whether the API can drive the K3S nodes (else why)."""

    pending: tuple[Pending, ...]
    kube_note: str


@dataclass(frozen=True)
class UpdatePlan(Change):
    """The hosts to update, in order: the gateway first, then servers, then agents."""

    gateways: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    kube_note: str = ""


PROBES = {"sim": SIMULATE, "held": HELD, "reboot": f"test -e {REBOOT_REQUIRED}"}


def read_pending(ctx: ControllerContext, host: Host) -> Pending:
    """One host's pending upgrades and reboot, read without changing it."""
    out = ctx.read(host, PROBES)
    upgrades, _ = read_upgrades(out["sim"], out["held"])
    return Pending(host.name, host.role, upgrades, out["reboot"].ok)


class RollingUpdate:
    """The gateway alone, then the K3S nodes one at a time: upgrade, reboot when required, back in service."""

    name = "rolling update"

    def __init__(self, inv: Inventory, kubeconfig: Path, timeline: Timeline, *, drain_timeout: float = 300.0,
                 ready_timeout: float = 300.0, poll: float = 2.0) -> None:
        self.inv, self.kubeconfig, self.timeline = inv, kubeconfig, timeline
        self.drain_timeout, self.ready_timeout, self.poll = drain_timeout, ready_timeout, poll

    def facts(self, ctx: ControllerContext) -> UpdateFacts:
        """Every host's pending work (read in parallel); whether the API knows the K3S nodes."""
        names = {c.name for c in ctx.hosts}
        hosts = [h for h in self.inv.hosts.values() if h.name in names]
        if not hosts:
            return UpdateFacts((), "")
        with ThreadPoolExecutor(max_workers=min(len(hosts), ctx.options.parallel)) as pool:
            pending = tuple(pool.map(lambda h: read_pending(ctx, h), hosts))
        nodes = [p.host for p in pending if p.any and p.role in ("server", "agent")]
        return UpdateFacts(pending, self.kube_note(nodes) if nodes else "")

    def kube_note(self, nodes: Sequence[str]) -> str:
        """"" when the API answers and knows `nodes`; else why the Kubernetes steps are skipped."""
        from picluster.kube import KubeError
        from picluster.kube.nodes import list_nodes

        if not self.kubeconfig.is_file():
            return f"no kubeconfig at {self.kubeconfig} (the k3s stage fetches it)"
        try:
            known = {n.name for n in list_nodes(Kube(self.kubeconfig, request_timeout=10.0))}
        except KubeError as err:
            return f"the Kubernetes API does not answer: {err}"
        missing = [n for n in nodes if n not in known]
        return f"{', '.join(missing)} not registered with the API server" if missing else ""

    def decide(self, facts: UpdateFacts) -> Decision:
        """Nothing to do, or the order and what each host would upgrade."""
        todo = [p for p in facts.pending if p.any]
        if not todo:
            return Ok(f"every host is up to date: {', '.join(p.host for p in facts.pending)}")

        def of(role: str) -> tuple[str, ...]:
            return tuple(p.host for p in todo if p.role == role)

        lines = [p.line() for p in todo]
        order = [*of("gateway"), *of("server"), *of("agent")]
        lines.append(f"order: {' -> '.join(order)} (the gateway alone, then one K3S node at a time)")
        if facts.kube_note and (of("server") or of("agent")):
            lines.append(f"cordon, drain, wait Ready and uncordon skipped: {facts.kube_note}")
        return UpdatePlan("\n".join(lines), [], gateways=of("gateway"), servers=of("server"), agents=of("agent"),
                          kube_note=facts.kube_note)

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """The gateway, then the nodes; the first host that fails stops the run and says where."""
        from picluster.kube.rolling import RollingError, rolling

        assert isinstance(change, UpdatePlan)
        done = [self._gateway(ctx, name) for name in change.gateways]
        if not change.servers and not change.agents:
            return f"updated: {', '.join(done)}"
        rebooted: set[str] = set()

        def act(name: str) -> None:
            self.timeline.add(name, "upgrade")
            result = ctx.run_on(ctx.host(name), upgrade_plan)
            back = next((s for s in result.steps if s.name == "wait for the reboot"), None)
            if back is not None:
                rebooted.add(name)
            self.timeline.add(name, "upgraded", f"rebooted, back after {back.duration:.0f}s" if back
                              else "no reboot required")

        steps = self._steps(act, rebooted, change)

        def on_step(node: str, role: str, step: str) -> None:
            if step != "upgrade" and not change.kube_note:
                self.timeline.add(node, step)

        try:
            done += rolling(list(change.servers), list(change.agents), steps, on_step=on_step)
        except RollingError as err:
            self.timeline.add(err.node, "failed", str(err))
            raise StepError(f"cluster.update stopped: {err}") from None
        return f"updated one at a time: {', '.join(done)}"

    def _gateway(self, ctx: ControllerContext, name: str) -> str:
        self.timeline.add(name, "outage announced", ANNOUNCE)
        ctx.read(ctx.host(name), {"announce": f"logger -t picluster '{ANNOUNCE}'; wall '{ANNOUNCE}' || true"})
        result = ctx.run_on(ctx.host(name), upgrade_plan)
        back = next((s for s in result.steps if s.name == "wait for the reboot"), None)
        self.timeline.add(name, "outage over", f"rebooted, back after {back.duration:.0f}s" if back
                          else "upgraded without a reboot")
        return name

    def _steps(self, act: Callable[[str], None], rebooted: set[str], change: UpdatePlan) -> NodeSteps:
        if change.kube_note:
            from picluster.ops.reboot import skipped_kube_steps

            return dataclasses.replace(skipped_kube_steps(act, change.kube_note, self.timeline), act_name="upgrade")
        return update_steps(Kube(self.kubeconfig), act, rebooted, servers=change.servers,
                            drain_timeout=self.drain_timeout, ready_timeout=self.ready_timeout, poll=self.poll)


def update_steps(kube: Kube, act: Callable[[str], None], rebooted: set[str], *, servers: Sequence[str],
                 drain_timeout: float, ready_timeout: float, poll: float = 2.0, progress: bool = False) -> NodeSteps:
    """The rolling steps through the API; a node the act rebooted is Ready only with a new boot id."""
    from picluster.kube.nodes import get_node
    from picluster.kube.rolling import kube_steps
    from picluster.kube.wait import wait_ready

    base = kube_steps(kube, act, servers=servers, drain_timeout=drain_timeout, ready_timeout=ready_timeout,
                      act_name="upgrade", progress=progress, poll=poll)
    boots: dict[str, str] = {}

    def cordon(node: str) -> None:
        boots[node] = get_node(kube, node).boot_id
        base.cordon(node)

    def wait(node: str) -> None:
        def check(info: NodeInfo) -> str | None:
            same = node in rebooted and info.boot_id == boots.get(node)
            return "it has not rebooted yet (same boot ID)" if same else None

        wait_ready(kube, [node], ready_timeout, servers=servers, interval=poll, check=check, progress=progress)

    return dataclasses.replace(base, cordon=cordon, wait_ready=wait)


def update_stage(inv: Inventory, timeline: Timeline, *, kubeconfig: Path | None = None,
                 drain_timeout: float = 300.0, ready_timeout: float = 300.0, poll: float = 2.0) -> Stage:
    """The `cluster.update` stage: download everywhere, then the rolling update; its gate is the os checks."""
    def phases(inv: Inventory, options: RunOptions) -> list[Phase]:
        from picluster.stages.k3s import kubeconfig_path

        step = RollingUpdate(inv, kubeconfig or options.kubeconfig or kubeconfig_path(inv), timeline,
                             drain_timeout=drain_timeout, ready_timeout=ready_timeout, poll=poll)
        return [HostPhase("download", lambda host: [AptDownload()]), controller_steps("update", step)]

    return Stage("update", ("gateway", "server", "agent"), "OS packages upgraded: the gateway alone, then one K3S "
                 "node at a time", phases, gate="os")
