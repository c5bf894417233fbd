"""The k3s stage's work on the controller: the rolling upgrade, then the settle (kubeconfig, Ready, labels).

Both read the cluster through the first server (its own kubectl lists the nodes, and its k3s.yaml becomes the
controller's kubeconfig), decide, then act through the Kubernetes API (`picluster.kube`):

- rolling upgrade: nodes of this run whose kubelet runs another version than the pinned one are upgraded one
  at a time, servers first: cordon, drain, the install on that node alone (host steps through the runner),
  wait Ready, uncordon;
- settle: the kubeconfig fetched (0600, server address rewritten to the server's IP), every node waited
  Ready, the workers labelled.

A run that leaves the first server out (--limit) does neither, and says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from picluster import localfs
from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, Change, Decision, Ok, ProbeOutput, StepError
from picluster.remote.phases import ControllerContext
from picluster.stages.k3s.config import BIN, READY_TIMEOUT_S, SERVER_KUBECONFIG, primary_server
from picluster.state.skip import skipped

NODES_PROBE = (f"systemctl is-active --quiet k3s || exit 3; {BIN} kubectl get nodes -o json "
               "--request-timeout=20s")
NOT_RUNNING = 3
#: What the controller steps read on the first server: the node list and the server's kubeconfig.
SERVER_PROBES = {"nodes": NODES_PROBE, "kubeconfig": f"cat -- {SERVER_KUBECONFIG}"}


@dataclass(frozen=True)
class NodeState:
    """One node as the API lists it."""

    name: str
    ready: bool
    version: str
    labels: Mapping[str, str] = field(default_factory=dict)


def parse_nodes(text: str) -> dict[str, NodeState]:
    """Return the nodes of `kubectl get nodes -o json` by name."""
    data = json.loads(text)
    out: dict[str, NodeState] = {}
    for item in data.get("items", []):
        meta, status = item.get("metadata", {}), item.get("status", {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        out[meta["name"]] = NodeState(meta["name"], ready, (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
                                      dict(meta.get("labels") or {}))
    return out


NODES_PROBE = (f"systemctl is-active --quiet k3s || exit 3; {BIN} kubectl get nodes -o json "
               "--request-timeout=20s")
NOT_RUNNING = 3


@dataclass(frozen=True)
class ClusterFacts:
    """The nodes as the first server's API lists them (None: k3s does not run there, with why)."""

    nodes: Mapping[str, NodeState] | None
    why: str = ""
    running: bool = True      # k3s runs on the server (its API may still be starting)


def cluster_facts(out: ProbeOutput, server: str) -> ClusterFacts:
    """Return the node list probe's output as facts."""
    if out.exit_code == NOT_RUNNING:
        return ClusterFacts(None, f"k3s is not running on {server}", running=False)
    if not out.ok:
        return ClusterFacts(None, f"the API on {server} did not list the nodes (exit code {out.exit_code})")
    try:
        return ClusterFacts(parse_nodes(out.stdout))
    except (ValueError, KeyError) as err:
        return ClusterFacts(None, f"unreadable node list from {server}: {err}")


def kubeconfig_header(server: str, source_sha: str, url: str) -> str:
    """Return the first line of the controller's kubeconfig: where it came from, to tell when it is stale."""
    return f"# picluster: {server}:{SERVER_KUBECONFIG} sha256 {source_sha}, server {url}\n"


def local_kubeconfig_text(raw: str, server: str, url: str) -> str:
    """Return the controller's kubeconfig made from the server's k3s.yaml."""
    from picluster.kube.kubeconfig import rewrite_server

    sha = hashlib.sha256(raw.encode()).hexdigest()
    return kubeconfig_header(server, sha, url) + rewrite_server(raw, url)


def write_local_kubeconfig(path: Path, text: str) -> None:
    """Write the kubeconfig on the controller: 0600 from the start, its folder 0700, whole or not at all."""
    localfs.write_atomic(path, text, 0o600, dir_mode=0o700)


@dataclass
class ClusterAccess:
    """What the controller steps need: where the kubeconfig goes, the API URL, waits and progress."""

    kubeconfig: Path
    api_url: str
    ready_timeout: float = READY_TIMEOUT_S
    drain_timeout: float = 300.0
    poll: float = 2.0
    progress: bool = False


@dataclass(frozen=True)
class ServerFacts:
    """The cluster and the server's kubeconfig as the first server shows them (absent: not in this run)."""

    cluster: ClusterFacts
    kubeconfig: str = ""
    in_run: bool = True
    limit: frozenset[str] | None = None     # the run's hosts (--limit); None: all


def read_server(ctx: ControllerContext, inv: Inventory) -> ServerFacts:
    """Read the node list and the kubeconfig on the first server, if this run covers it."""
    server = primary_server(inv)
    if not ctx.options.selected(server.name):
        return ServerFacts(ClusterFacts(None, f"{server.name} is not in this run"), in_run=False,
                           limit=ctx.options.limit)
    out = ctx.read(ctx.host(server.name), SERVER_PROBES)
    kubeconfig = out["kubeconfig"].stdout if out["kubeconfig"].ok else ""
    return ServerFacts(cluster_facts(out["nodes"], server.name), kubeconfig, limit=ctx.options.limit)


# --- the rolling upgrade ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roll(Change):
    """The rolling upgrade to do: its nodes in order, and the server's kubeconfig to reach the API with."""

    servers: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    kubeconfig: str = ""


UpgradeSteps = Callable[[Host], Sequence[AnyStep]]


class RollingUpgrade:
    """Upgrade the nodes of this run that run another K3S version, one at a time, servers first."""

    name = "rolling upgrade"

    def __init__(self, inv: Inventory, version: str, access: ClusterAccess, upgrade_steps: UpgradeSteps) -> None:
        self.inv, self.version, self.access, self.upgrade_steps = inv, version, access, upgrade_steps

    def facts(self, ctx: ControllerContext) -> ServerFacts:
        """The node list and the kubeconfig from the first server; the run's hosts."""
        return read_server(ctx, self.inv)

    def decide(self, facts: ServerFacts) -> Decision:
        """Nothing to upgrade, or the order to upgrade in; nodes outside --limit are named and left."""
        server = primary_server(self.inv).name
        if not facts.in_run:
            return Ok(f"the rolling upgrade runs from {server}, which this run leaves out")
        nodes = facts.cluster.nodes
        if nodes is None:
            return skipped(f"{facts.cluster.why}: no cluster to upgrade yet")
        stale = {h.name: nodes[h.name].version for h in self.inv.select(roles=["server", "agent"])
                 if h.name in nodes and nodes[h.name].version not in ("", self.version)}
        if not stale:
            return Ok(f"every registered node runs {self.version}")
        left = sorted(n for n in stale if facts.limit is not None and n not in facts.limit)
        left_note = f"not in --limit, left on their version: {', '.join(f'{n} ({stale[n]})' for n in left)}"
        servers = tuple(h.name for h in self.inv.servers if h.name in stale and h.name not in left)
        agents = tuple(h.name for h in self.inv.agents if h.name in stale and h.name not in left)
        if not servers and not agents:
            return Ok(f"no node of this run to upgrade to {self.version}; {left_note}")
        order = ", ".join(f"{n} ({stale[n]})" for n in servers + agents)
        diff = (f"rolling upgrade to {self.version}, servers first, one node at a time (cordon, drain, upgrade, "
                f"wait Ready, uncordon): {order}" + (f"; {left_note}" if left else ""))
        return Roll(diff, [], servers=servers, agents=agents, kubeconfig=facts.kubeconfig)

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """Roll through the API; each node's upgrade runs as host steps on that node alone."""
        from picluster.kube import Kube
        from picluster.kube.rolling import RollingError, kube_steps, rolling

        assert isinstance(change, Roll)
        access = self.access
        write_local_kubeconfig(access.kubeconfig, local_kubeconfig_text(
            change.kubeconfig, primary_server(self.inv).name, access.api_url))

        def upgrade(name: str) -> None:
            ctx.run_on(ctx.host(name), self.upgrade_steps)

        steps = kube_steps(Kube(access.kubeconfig), upgrade, servers=list(change.servers),
                           drain_timeout=access.drain_timeout, ready_timeout=access.ready_timeout,
                           expect_version=self.version, progress=access.progress, poll=access.poll)
        try:
            done = rolling(list(change.servers), list(change.agents), steps)
        except RollingError as err:
            raise StepError(f"rolling upgrade stopped: {err}; fix that node and run the stage again (it upgrades "
                            "the nodes still on the old version)") from None
        return f"upgraded one at a time: {', '.join(done)}"


# --- the settle ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettleFacts:
    """The first server's view, and the controller's kubeconfig (its first line and mode; None: missing)."""

    server: ServerFacts
    local_header: str | None
    local_mode: int | None


@dataclass(frozen=True)
class Settling(Change):
    """The settle to do, with the server's kubeconfig."""

    kubeconfig: str = ""


class Settle:
    """Every node Ready and the workers labelled through the API; the controller's kubeconfig current."""

    name = "nodes Ready, workers labelled, kubeconfig"

    def __init__(self, inv: Inventory, access: ClusterAccess) -> None:
        self.inv, self.access = inv, access

    def facts(self, ctx: ControllerContext) -> SettleFacts:
        """The first server's node list and kubeconfig; the controller's copy's first line and mode."""
        server = read_server(ctx, self.inv)
        header, mode = None, None
        try:
            with self.access.kubeconfig.open(encoding="utf-8") as f:
                header = f.readline()
            mode = self.access.kubeconfig.stat().st_mode & 0o777
        except OSError:
            pass
        return SettleFacts(server, header, mode)

    def decide(self, facts: SettleFacts) -> Decision:
        """Ok, or what `act` will do."""
        server = primary_server(self.inv).name
        cluster = facts.server.cluster
        if not facts.server.in_run:
            return Ok(f"{server} (the first server) is not in this run: the cluster is not waited for")
        if not cluster.running:
            return skipped(f"{cluster.why}: no API to wait on, no kubeconfig to fetch")
        todo = self._kubeconfig_todo(facts)
        if cluster.nodes is None:       # k3s runs but its API does not answer yet: act waits
            todo.insert(0, f"wait for the API ({cluster.why})")
        todo += self._nodes_todo(cluster.nodes or {})
        k3s_hosts = self.inv.select(roles=["server", "agent"])
        if not todo:
            return Ok(f"{len(k3s_hosts)} nodes Ready, workers labelled, {self.access.kubeconfig} is current")
        return Settling("\n".join(todo), [], kubeconfig=facts.server.kubeconfig)

    def _kubeconfig_todo(self, facts: SettleFacts) -> list[str]:
        server = primary_server(self.inv).name
        sha = hashlib.sha256(facts.server.kubeconfig.encode()).hexdigest()
        if facts.local_header != kubeconfig_header(server, sha, self.access.api_url):
            return [f"fetch {SERVER_KUBECONFIG} from {server} to {self.access.kubeconfig} (0600), "
                    f"server {self.access.api_url}"]
        if facts.local_mode != 0o600:
            return [f"mode of {self.access.kubeconfig}: {facts.local_mode or 0:04o} -> 0600"]
        return []

    def _nodes_todo(self, nodes: Mapping[str, NodeState]) -> list[str]:
        from picluster.kube.nodes import WORKER_LABELS

        todo = []
        waiting = [h.name for h in self.inv.select(roles=["server", "agent"])
                   if h.name not in nodes or not nodes[h.name].ready]
        if waiting:
            todo.append(f"wait until Ready: {', '.join(waiting)}")
        unlabelled = [h.name for h in self.inv.agents
                      if any((nodes[h.name].labels if h.name in nodes else {}).get(k) != v
                             for k, v in WORKER_LABELS.items())]
        if unlabelled:
            todo.append(f"label as workers ({', '.join(f'{k}={v}' for k, v in WORKER_LABELS.items())}): "
                        + ", ".join(unlabelled))
        return todo

    def act(self, ctx: ControllerContext, change: Change) -> str:
        """Write the kubeconfig, wait until every node is Ready, label the workers."""
        from picluster.kube import Kube, KubeError
        from picluster.kube.nodes import WORKER_LABELS, label
        from picluster.kube.wait import wait_ready

        assert isinstance(change, Settling)
        access = self.access
        done: list[str] = []
        try:
            text = local_kubeconfig_text(change.kubeconfig, primary_server(self.inv).name, access.api_url)
            write_local_kubeconfig(access.kubeconfig, text)
            done.append(f"kubeconfig written to {access.kubeconfig} (0600), server {access.api_url}")
            kube = Kube(access.kubeconfig)
            names = [h.name for h in self.inv.select(roles=["server", "agent"])]
            wait_ready(kube, names, access.ready_timeout, servers=[h.name for h in self.inv.servers],
                       interval=access.poll, progress=access.progress)
            done.append(f"Ready: {', '.join(names)}")
            labelled = [h.name for h in self.inv.agents if label(kube, h.name, dict(WORKER_LABELS))]
            if labelled:
                done.append(f"labelled as workers: {', '.join(labelled)}")
        except KubeError as err:
            raise StepError(str(err) or type(err).__name__) from None
        return "\n".join(done)
