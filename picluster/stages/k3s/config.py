"""The k3s stage's configuration: where K3S's files live, what they say, and the graceful-shutdown check.

config.yaml and kubelet.config are rendered from the inventory; the graceful-shutdown periods come from the
host's typed settings (`host.settings.shutdown`), which the os stage's logind drop-in and `cluster.shutdown`
read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from picluster import localfs
from picluster.facts import INHIBIT_DELAY, K3S_BIN, k3s_unit, parse_usec
from picluster.inventory import Host, Inventory
from picluster.remote import Decision, Ok, ProbeOutput, StepError
from picluster.stages.templates import render

K3S_DIR = "/etc/rancher/k3s"
CONFIG = f"{K3S_DIR}/config.yaml"
KUBELET_CONFIG = f"{K3S_DIR}/kubelet.config"
TOKEN_FILE = f"{K3S_DIR}/cluster-token"
SERVER_KUBECONFIG = f"{K3S_DIR}/k3s.yaml"
BIN = K3S_BIN
SYSTEMD_DIR = "/etc/systemd/system"
API_PORT = 6443
# The server's admin kubeconfig, readable by root only. The reference used 0644 (--write-kubeconfig-mode), so
# any local account (node1 also runs Minio) could act as cluster admin; we read it through sudo instead.
KUBECONFIG_MODE = "0600"
MASTER_TAINT = "node-role.kubernetes.io/master=true:NoSchedule"
AGENT_LABELS: Mapping[str, str] = {"node_type": "worker"}   # pi-cluster v1.4's --node-label on workers
READY_TIMEOUT_S = 300.0
ARCHES: Mapping[str, str] = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64",
                             "armv7l": "arm", "armv6l": "arm"}
BINARIES: Mapping[str, str] = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}


def token_secret(inv: Inventory) -> str:
    """Return the name of the cluster token in the controller's secrets store (one per cluster)."""
    return f"k3s_token_{inv.cluster.name}"


def unit_of(host: Host) -> str:
    """Return the systemd unit K3S runs as on `host` (a server or an agent)."""
    unit = k3s_unit(host.role)
    if unit is None:
        raise ValueError(f"{host.name} is a {host.role}, not a K3S node")
    return unit


def primary_server(inv: Inventory) -> Host:
    """Return the first server: it starts the cluster, the others join it."""
    return inv.servers[0]


def server_url(inv: Inventory) -> str:
    """Return the URL agents (and the controller) reach the Kubernetes API at."""
    return f"https://{primary_server(inv).ip}:{API_PORT}"


def kubeconfig_path(inv: Inventory) -> Path:
    """Return where the controller keeps the cluster's kubeconfig (see `localfs.kubeconfig_path`)."""
    return localfs.kubeconfig_path(inv.cluster.name, inv.lab.state_dir if inv.lab is not None else None)


# --- rendered files -------------------------------------------------------------------------------------


def node_labels(host: Host) -> dict[str, str]:
    """Return the labels K3S registers the node with: agents' node_type=worker, then the inventory's."""
    labels = dict(AGENT_LABELS) if host.role == "agent" else {}
    labels.update(host.settings.k3s_node_labels)
    return labels


def config_yaml(inv: Inventory, host: Host) -> str:
    """Return /etc/rancher/k3s/config.yaml for `host`."""
    primary = primary_server(inv)
    joins = host.name != primary.name
    return render(
        "k3s/config.yaml.j2", inventory_path=inv.path.name, unit=unit_of(host), role=host.role,
        server_url=server_url(inv) if joins else "", cluster_init=not joins and len(inv.servers) > 1,
        token_file=TOKEN_FILE, node_name=host.name, node_ip=str(host.ip), kubeconfig_mode=KUBECONFIG_MODE,
        taints=[MASTER_TAINT], labels=[f"{k}={v}" for k, v in node_labels(host).items()],
        kubelet_config=KUBELET_CONFIG,
    )


def kubelet_config(inv: Inventory, host: Host) -> str:
    """Return /etc/rancher/k3s/kubelet.config: the graceful node shutdown periods of the inventory."""
    return render("k3s/kubelet.config.j2", inventory_path=inv.path.name,
                  grace=host.settings.shutdown.grace, critical=host.settings.shutdown.critical,
                  delay=host.settings.shutdown.logind_delay)


def shutdown_problems_of(host: Host, inhibit_delay_max: float | None) -> list[str]:
    """Return why the host's graceful-shutdown settings would not work with this logind delay ([]: fine)."""
    from picluster.kube.shutdown import shutdown_problems

    grace = host.settings.shutdown
    return shutdown_problems(float(grace.grace), float(grace.critical), inhibit_delay_max)



@dataclass(frozen=True)
class ShutdownFacts:
    """logind's effective InhibitDelayMaxSec in seconds (None: not readable, its default applies)."""

    delay: float | None
    source: str


class GracefulShutdown:
    """Check that the kubelet's shutdown periods fit: critical < total, and logind's delay ≥ total.

    Reads logind's effective value (busctl, else the merged logind.conf) so a drop-in that sorts later
    (unattended-upgrades' 30s) or a logind not restarted after the os stage is caught before K3S runs.
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def name(self) -> str:
        """Return the step label."""
        return "graceful node shutdown settings"

    def probes(self) -> Mapping[str, str]:
        """logind's property, and its merged configuration."""
        return {
            "busctl": INHIBIT_DELAY,
            "config": "systemd-analyze cat-config systemd/logind.conf",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> ShutdownFacts:
        """Prefer the running logind's value; else the last InhibitDelayMaxSec of its configuration."""
        from picluster.kube.shutdown import timespan_seconds

        bus = outputs["busctl"]
        seconds = parse_usec(bus.stdout) if bus.ok else None
        if seconds is not None:
            return ShutdownFacts(seconds, "logind (busctl)")
        value = None
        if outputs["config"].ok:
            for line in outputs["config"].stdout.splitlines():
                line = line.strip()
                if line.startswith("InhibitDelayMaxSec="):
                    value = line.split("=", 1)[1]
        if value is None:
            return ShutdownFacts(None, "logind's default")
        try:
            return ShutdownFacts(timespan_seconds(value), "logind.conf and its drop-ins")
        except ValueError:
            return ShutdownFacts(None, f"logind.conf (unreadable value {value!r})")

    def decide(self, facts: ShutdownFacts) -> Decision:
        """Fail with every problem, or say why the settings work together."""
        problems = shutdown_problems_of(self.host, facts.delay)
        if problems:
            raise StepError("graceful node shutdown would not work: " + "; ".join(problems)
                            + " (the os stage writes the logind drop-in: run it, then this stage again)")
        grace, critical = self.host.settings.shutdown.grace, self.host.settings.shutdown.critical
        delay = "its default" if facts.delay is None else f"{facts.delay:g}s"
        return Ok(f"shutdownGracePeriod {grace}s (critical pods {critical}s) within logind's "
                  f"InhibitDelayMaxSec {delay} ({facts.source})")
