"""The `k3s` stage: the K3S server and agents at the pinned version, with graceful node shutdown.

Its phases:

1. hosts (servers and agents at once): config.yaml and kubelet.config from the inventory, the cluster token as
   a 0600 file (from the controller's secrets store, never in argv), the graceful-shutdown settings checked
   against logind's effective delay, the air-gap bundle staged, the official install script at the pinned
   version, the service restarted when its files changed (`config`, `install`);
2. controller: the rolling upgrade of nodes on another version, then the settle: kubeconfig, every node
   Ready, workers labelled (`cluster`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep
from picluster.remote.phases import HostPhase, Phase, RunOptions, controller_steps
from picluster.stages.k3s.cluster import (
    NODES_PROBE,
    NOT_RUNNING,
    ClusterAccess,
    RollingUpgrade,
    Settle,
    kubeconfig_header,
    local_kubeconfig_text,
    parse_nodes,
)
from picluster.stages.k3s.config import (
    BIN,
    CONFIG,
    K3S_DIR,
    KUBELET_CONFIG,
    READY_TIMEOUT_S,
    SYSTEMD_DIR,
    TOKEN_FILE,
    GracefulShutdown,
    config_yaml,
    kubeconfig_path,
    kubelet_config,
    primary_server,
    server_url,
    token_secret,
    unit_of,
)
from picluster.stages.k3s.install import (
    AIRGAP_ENV,
    LOCAL_STORAGE,
    STAGING,
    Airgap,
    AirgapStaged,
    K3sInstall,
    install_script,
    local_path_kept_non_default,
)
from picluster.state import Apt, Directory, File, Service
from picluster.state.batch import Batch
from picluster.state.skip import OnlyIf

__all__ = [
    "AIRGAP_ENV",
    "BIN",
    "LOCAL_STORAGE",
    "NODES_PROBE",
    "NOT_RUNNING",
    "STAGING",
    "Airgap",
    "AirgapStaged",
    "ClusterAccess",
    "GracefulShutdown",
    "K3sInstall",
    "K3sRun",
    "RollingUpgrade",
    "Settle",
    "config_yaml",
    "host_steps",
    "install_script",
    "kubeconfig_header",
    "kubeconfig_path",
    "kubelet_config",
    "local_kubeconfig_text",
    "local_path_kept_non_default",
    "parse_nodes",
    "phases",
    "prepare",
    "primary_server",
    "server_url",
    "token_secret",
    "upgrade_steps",
]


@dataclass(frozen=True)
class K3sRun:
    """What one run of the stage works with: the token (read, or made, once), the version, the bundle."""

    inv: Inventory
    token: str
    version: str
    bundle: Airgap | None
    access: ClusterAccess
    limit: frozenset[str] | None = None
    error: str = ""     # a problem found while preparing (bad bundle, unreadable secret): every host fails with it

    def host_plan(self, host: Host) -> Sequence[AnyStep]:
        """Return the host phase's steps for `host` (raise the preparation's error, so every host reports it)."""
        if self.error:
            raise ValueError(self.error)
        return host_steps(self, host)



def host_steps(run: K3sRun, host: Host) -> list[AnyStep]:
    """Return the k3s stage's steps for one host, in order."""
    inv = run.inv
    unit = unit_of(host)
    unit_file = f"{SYSTEMD_DIR}/{unit}.service"
    steps: list[AnyStep] = [
        Apt(["curl"]),
        GracefulShutdown(host),
        Batch("k3s configuration and token", [
            Directory(K3S_DIR),
            File(CONFIG, config_yaml(inv, host)),
            File(KUBELET_CONFIG, kubelet_config(inv, host)),
            File(TOKEN_FILE, run.token + "\n", mode=0o600, secret=True),
        ]),
    ]
    if run.bundle is not None:
        steps.append(AirgapStaged(run.bundle))
    steps += [
        K3sInstall(inv, host, run.version, run.bundle, selected=run.limit),
        OnlyIf(Service(unit, enabled=True, running=True, restart_on=[CONFIG, KUBELET_CONFIG, TOKEN_FILE]),
               f"test -f {shlex.quote(unit_file)}", f"{unit} is not installed on {host.name} (see the install step)"),
    ]
    return steps


def upgrade_steps(run: K3sRun, host: Host) -> list[AnyStep]:
    """Return what the rolling upgrade runs on one node: the bundle staged, then the install."""
    steps: list[AnyStep] = [AirgapStaged(run.bundle)] if run.bundle else []
    return [*steps, K3sInstall(run.inv, host, run.version, run.bundle, upgrade=True)]


def prepare(inv: Inventory, options: RunOptions, *, version: str | None = None, api_url: str | None = None,
            ready_timeout: float = READY_TIMEOUT_S, drain_timeout: float = 300.0, poll: float = 2.0) -> K3sRun:
    """Return what a run of the stage works with; the cluster token comes from the secrets store (made on
    first use, 0600, not in a dry run), the air-gap bundle from the options, the version from k8s/versions.yml."""
    from picluster.secrets import SecretError, ensure_secret
    from picluster.versions import k3s_version

    access = ClusterAccess(kubeconfig=options.kubeconfig or kubeconfig_path(inv), api_url=api_url or server_url(inv),
                           ready_timeout=ready_timeout, drain_timeout=drain_timeout, poll=poll,
                           progress=options.progress)
    token, bundle, error = "", None, ""
    try:
        bundle = Airgap.from_option(options.airgap)
        token = ensure_secret(token_secret(inv))
    except (ValueError, SecretError) as err:
        error = str(err)
    return K3sRun(inv=inv, token=token, version=version or k3s_version(), bundle=bundle, access=access,
                  limit=options.limit, error=error)


def phases(inv: Inventory, options: RunOptions) -> list[Phase]:
    """Return the stage's phases: install and configure every node, then roll and settle from the controller."""
    run = prepare(inv, options)
    return [
        HostPhase("install", run.host_plan),
        controller_steps("cluster", RollingUpgrade(inv, run.version, run.access, lambda h: upgrade_steps(run, h)),
                         Settle(inv, run.access)),
    ]
