"""Wait for nodes to be Ready, with progress; a timeout names each missing node and what to read on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from picluster.kube.client import Kube, KubeError
from picluster.kube.nodes import NodeInfo, list_nodes
from picluster.kube.progress import waiting

if TYPE_CHECKING:
    from rich.console import Console


class NodesNotReady(KubeError):
    """Nodes did not become Ready in time; `missing` maps each to why."""

    def __init__(self, message: str, missing: dict[str, str]) -> None:
        super().__init__(message)
        self.missing = missing


def service_of(*, server: bool) -> str:
    """The systemd unit K3S runs on a node: k3s on servers, k3s-agent on agents."""
    return "k3s" if server else "k3s-agent"


def hint(name: str, *, server: bool) -> str:
    """What to look at on a node that is not Ready."""
    unit = service_of(server=server)
    return f"on {name} look at `systemctl status {unit}` and `journalctl -u {unit}`"


def wait_ready(
    kube: Kube,
    names: Iterable[str],
    timeout: float,
    *,
    servers: Collection[str] = (),
    interval: float = 2.0,
    check: Callable[[NodeInfo], str | None] | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> list[NodeInfo]:
    """Wait until every named node is registered and Ready; return them, or raise NodesNotReady.

    `servers` names the K3S servers (the rest are agents) for the hint in the error: `journalctl -u k3s`
    on servers, `journalctl -u k3s-agent` on agents. API errors while waiting (a server restarting) are
    tolerated until the timeout, and reported if they were the last thing seen. `check(node)` can hold a
    Ready node back with a reason (e.g. its kubelet is not yet the upgraded version: a restarted node
    stays Ready in the API for a while before it turns NotReady).
    """
    wanted = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout
    last_error = ""
    seen: dict[str, NodeInfo] = {}
    with waiting("nodes Ready", console=console, enabled=progress) as update:
        while True:
            try:
                seen = {n.name: n for n in list_nodes(kube) if n.name in wanted}
                last_error = ""
            except KubeError as err:
                last_error = str(err)
            ready = [name for name in wanted if name in seen and seen[name].ready
                     and (check is None or check(seen[name]) is None)]
            pending = [name for name in wanted if name not in ready]
            update(len(ready), len(wanted), pending)
            if not pending:
                return [seen[name] for name in wanted]
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))

    missing: dict[str, str] = {}
    for name in pending:
        node = seen.get(name)
        server = name in servers or bool(node and node.is_server)
        role = "server" if server else "agent"
        if node is None:
            why = "never registered with the API server" if not last_error else "state unknown (API unreachable)"
        elif node.ready:
            why = f"Ready but {check(node) if check else 'not counted'}"
        else:
            why = f"NotReady ({node.reason})" if node.reason else "NotReady"
        missing[name] = f"{name} ({role}): {why}; {hint(name, server=server)}"
    message = f"nodes not Ready after {timeout:g}s: " + "; ".join(missing.values())
    if last_error:
        message += f"; the API server did not answer at the end: {last_error}" \
                   " (on the servers look at `journalctl -u k3s`)"
    raise NodesNotReady(message, missing)
