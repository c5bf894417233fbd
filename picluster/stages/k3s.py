"""The `k3s` stage: the K3S server and agents at the pinned version, with graceful node shutdown.

Per host: /etc/rancher/k3s/config.yaml and kubelet.config rendered from the inventory, the cluster token
as a 0600 file (from the controller's secrets store, never in argv), the graceful-shutdown settings
checked against logind's effective InhibitDelayMaxSec, then the official install script with
INSTALL_K3S_VERSION (fetched from get.k3s.io by the node, or uploaded from an air-gap bundle with the
binary and images, INSTALL_K3S_SKIP_DOWNLOAD), and the service, restarted when its files changed.
Agents wait for the server's API before they join it.

On the first server, after its own steps, two controller-side actions that follow the Reboot/AwaitBoot
pattern (a step writes a marker under /run/picluster on the host; the next step sees it and acts on the
controller, so a dry run shows the plan and does nothing):

- rolling upgrade: nodes whose kubelet runs another version than the pinned one are upgraded one at a
  time, servers first, each cordoned, drained, upgraded, waited Ready and uncordoned (picluster.kube);
- settle: the kubeconfig is fetched to the controller (0600, server address rewritten to the server's
  IP), every node is waited Ready through the API, and the workers are labelled.

A host with no k3s binary in reach (not installed, no air-gap bundle, get.k3s.io unreachable from it)
gets an explicit skip with that reason for the install, the service and the cluster steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _random
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, Change, Command, Decision, Ok, ProbeOutput, StepError, changed_mark
from picluster.stages import os as os_stage
from picluster.stages.templates import render
from picluster.state import Apt, Directory, File, Service
from picluster.state.batch import Batch
from picluster.state.skip import OnlyIf, skipped

q = shlex.quote

K3S_DIR = "/etc/rancher/k3s"
CONFIG = f"{K3S_DIR}/config.yaml"
KUBELET_CONFIG = f"{K3S_DIR}/kubelet.config"
TOKEN_FILE = f"{K3S_DIR}/cluster-token"
SERVER_KUBECONFIG = f"{K3S_DIR}/k3s.yaml"
BIN = "/usr/local/bin/k3s"
SYSTEMD_DIR = "/etc/systemd/system"
LOCAL_STORAGE = "/var/lib/rancher/k3s/server/manifests/local-storage.yaml"   # K3S's packaged local-path
STAGING = "/var/lib/picluster/k3s"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
ROLL_PENDING = "/run/picluster/k3s-roll-pending"
SETTLE_PENDING = "/run/picluster/k3s-settle-pending"
INSTALL_URL = "https://get.k3s.io"
API_PORT = 6443
AIRGAP_ENV = "PICLUSTER_K3S_AIRGAP"
KUBECONFIG_ENV = "PICLUSTER_KUBECONFIG"
KUBECONFIG_MODE = "0644"     # as pi-cluster v1.4 (--write-kubeconfig-mode '0644'); the controller's copy is 0600
MASTER_TAINT = "node-role.kubernetes.io/master=true:NoSchedule"
AGENT_LABELS: Mapping[str, str] = {"node_type": "worker"}   # pi-cluster v1.4's --node-label on workers
INSTALL_TIMEOUT_S = 900
SERVER_WAIT_S = 300
READY_TIMEOUT_S = 300.0
# uname -m -> the name K3S releases use
ARCHES: Mapping[str, str] = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64",
                             "armv7l": "arm", "armv6l": "arm"}
BINARIES: Mapping[str, str] = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}


def token_secret(inv: Inventory) -> str:
    """Return the name of the cluster token in the controller's secrets store (one per cluster)."""
    return f"k3s_token_{inv.cluster.name}"


def unit_of(host: Host) -> str:
    """Return the systemd unit K3S runs as on `host`."""
    return "k3s" if host.role == "server" else "k3s-agent"


def primary_server(inv: Inventory) -> Host:
    """Return the first server: it starts the cluster, the others join it."""
    return inv.servers[0]


def server_url(inv: Inventory) -> str:
    """Return the URL agents (and the controller) reach the Kubernetes API at."""
    return f"https://{primary_server(inv).ip}:{API_PORT}"


def kubeconfig_path(inv: Inventory) -> Path:
    """Return where the controller keeps the cluster's kubeconfig: $PICLUSTER_KUBECONFIG, the lab's state
    folder for a lab inventory, else $XDG_CONFIG_HOME/picluster/kubeconfig-<cluster name>."""
    if os.environ.get(KUBECONFIG_ENV):
        return Path(os.environ[KUBECONFIG_ENV])
    if inv.lab is not None:
        return inv.lab.state_dir / "kubeconfig"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / f"kubeconfig-{inv.cluster.name}"


# --- rendered files -------------------------------------------------------------------------------------


def node_labels(host: Host) -> dict[str, str]:
    """Return the labels K3S registers the node with: agents' node_type=worker, then the inventory's."""
    labels = dict(AGENT_LABELS) if host.role == "agent" else {}
    labels.update(host.vars.get("k3s_node_labels") or {})
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


def logind_delay(host: Host) -> int:
    """Return the InhibitDelayMaxSec the os stage's logind drop-in sets for `host`."""
    for line in os_stage.logind_dropin(host).splitlines():
        if line.startswith("InhibitDelayMaxSec="):
            return int(line.split("=", 1)[1])
    raise ValueError("the os stage's logind drop-in sets no InhibitDelayMaxSec")


def kubelet_config(inv: Inventory, host: Host) -> str:
    """Return /etc/rancher/k3s/kubelet.config: the graceful node shutdown periods of the inventory."""
    return render("k3s/kubelet.config.j2", inventory_path=inv.path.name,
                  grace=int(host.vars["kubelet_shutdown_grace_period"]),
                  critical=int(host.vars["kubelet_shutdown_grace_period_critical_pods"]),
                  delay=logind_delay(host))


def shutdown_problems_of(host: Host, inhibit_delay_max: float | None) -> list[str]:
    """Return why the host's graceful-shutdown settings would not work with this logind delay ([]: fine)."""
    from picluster.kube.shutdown import shutdown_problems

    return shutdown_problems(float(host.vars["kubelet_shutdown_grace_period"]),
                             float(host.vars["kubelet_shutdown_grace_period_critical_pods"]), inhibit_delay_max)


# --- the air-gap bundle ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Airgap:
    """A directory the user filled from a K3S release: k3s / k3s-arm64 / k3s-armhf, the matching
    k3s-airgap-images-<arch>.tar[.gz|.zst], and optionally install.sh (the script get.k3s.io serves)."""

    dir: Path

    @classmethod
    def from_option(cls, value: str | os.PathLike[str] | None) -> Airgap | None:
        """Return the bundle named by --airgap or $PICLUSTER_K3S_AIRGAP, None when neither is set."""
        raw = str(value) if value else os.environ.get(AIRGAP_ENV, "")
        if not raw:
            return None
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise ValueError(f"the air-gap bundle {path} is not a directory (from --airgap or {AIRGAP_ENV})")
        return cls(path.resolve())

    def binary(self, arch: str) -> Path | None:
        """Return the k3s binary for this release architecture, if the bundle has it."""
        path = self.dir / BINARIES.get(arch, f"k3s-{arch}")
        return path if path.is_file() else None

    def images(self, arch: str) -> Path | None:
        """Return the images tarball for this architecture, if the bundle has it."""
        found = sorted(self.dir.glob(f"k3s-airgap-images-{arch}.tar*"))
        return found[0] if found else None

    @property
    def script(self) -> Path | None:
        """Return the bundled install script, if any."""
        path = self.dir / "install.sh"
        return path if path.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StagedFacts:
    """The host's release architecture and the sha256 of each staged file (None: missing)."""

    arch: str
    machine: str
    staged: Mapping[str, str | None]


def staged_path(local: Path) -> str:
    """Return where a bundle file is staged on the node."""
    return f"{STAGING}/{local.name}"


class AirgapStaged:
    """Upload the air-gap bundle's files for the node's architecture to /var/lib/picluster/k3s (by sha256).

    Staged, not installed: the install step (or the rolling upgrade) puts them in place, so a running
    node never switches binaries before it is drained.
    """

    def __init__(self, bundle: Airgap) -> None:
        self.bundle = bundle
        self._hashes: dict[Path, str] = {}

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"air-gap bundle staged in {STAGING}"

    def files(self, arch: str) -> list[Path]:
        """Return the bundle files this architecture needs (binary, images, script)."""
        return [p for p in (self.bundle.binary(arch), self.bundle.images(arch), self.bundle.script) if p]

    def probes(self) -> Mapping[str, str]:
        """The architecture, and the sha256 of every file that could be staged."""
        names = sorted({p.name for arch in set(ARCHES.values()) for p in self.files(arch)})
        paths = " ".join(q(f"{STAGING}/{n}") for n in names)
        return {"arch": "uname -m", "staged": f"sha256sum -- {paths} 2>/dev/null" if paths else "true"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> StagedFacts:
        """Type the outputs."""
        machine = outputs["arch"].stdout.strip()
        staged: dict[str, str | None] = {}
        for line in outputs["staged"].stdout.splitlines():
            digest, _, path = line.partition("  ")
            staged[path.strip()] = digest.strip()
        return StagedFacts(ARCHES.get(machine, ""), machine, staged)

    def digest(self, path: Path) -> str:
        """Return (and remember) a local file's sha256."""
        if path not in self._hashes:
            self._hashes[path] = _sha256(path)
        return self._hashes[path]

    def decide(self, facts: StagedFacts) -> Decision:
        """Upload what is missing or differs."""
        if not facts.arch:
            raise StepError(f"K3S has no release for this architecture ({facts.machine or 'unknown'})")
        if self.bundle.binary(facts.arch) is None:
            raise StepError(f"the air-gap bundle {self.bundle.dir} has no {BINARIES[facts.arch]} for this "
                            f"{facts.machine} host; add it from the K3S release")
        from picluster.state._fs import write_command

        diffs, commands = [], [Command(f"mkdir -p -- {q(STAGING)}")]
        for local in self.files(facts.arch):
            remote = staged_path(local)
            if facts.staged.get(remote) == self.digest(local):
                continue
            diffs.append(f"upload {local} -> {remote} ({local.stat().st_size} bytes)")
            mode = 0o755 if local == self.bundle.binary(facts.arch) else 0o644
            commands.append(write_command(remote, local, mode=mode, owner="root", group="root"))   # streamed
        if not diffs:
            return Ok(f"the bundle's files for {facts.arch} are staged in {STAGING}")
        return Change("\n".join(diffs), commands)


# --- graceful shutdown ----------------------------------------------------------------------------------


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
            "busctl": "busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
                      "org.freedesktop.login1.Manager InhibitDelayMaxUSec",
            "config": "systemd-analyze cat-config systemd/logind.conf",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> ShutdownFacts:
        """Prefer the running logind's value; else the last InhibitDelayMaxSec of its configuration."""
        from picluster.kube.shutdown import timespan_seconds

        bus = outputs["busctl"]
        parts = bus.stdout.split()
        if bus.ok and len(parts) == 2 and parts[0] == "t" and parts[1].isdigit():
            return ShutdownFacts(int(parts[1]) / 1e6, "logind (busctl)")
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
        grace = self.host.vars["kubelet_shutdown_grace_period"]
        critical = self.host.vars["kubelet_shutdown_grace_period_critical_pods"]
        delay = "its default" if facts.delay is None else f"{facts.delay:g}s"
        return Ok(f"shutdownGracePeriod {grace}s (critical pods {critical}s) within logind's "
                  f"InhibitDelayMaxSec {delay} ({facts.source})")


# --- install --------------------------------------------------------------------------------------------


def installed_version(text: str) -> str | None:
    """Return the version in `k3s --version` output ("k3s version v1.24.3+k3s1 (990ba0e8)"), or None."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "k3s" and parts[1] == "version":
            return parts[2]
    return None


def wait_for_server(url: str, server: str, seconds: int = SERVER_WAIT_S) -> str:
    """Return shell lines that wait (bounded) until the K3S server's API answers at `url`."""
    ping = q(f"{url}/ping")
    tries = max(1, seconds // 2)
    message = q(f"the K3S server at {url} did not answer within {seconds}s; "
                f"on {server} look at `systemctl status k3s` and `journalctl -u k3s`")
    return "\n".join([
        "i=0",
        f"until curl -ks -o /dev/null --max-time 5 {ping}; do",
        f'  i=$((i + 1)); [ "$i" -lt {tries} ] || {{ printf \'%s\\n\' {message} >&2; exit 1; }}',
        "  sleep 2",
        "done",
    ])


def install_script(*, role: str, version: str, url: str = "", server: str = "",
                   bundle: Airgap | None = None, arch: str = "") -> str:
    """Return the command that installs (or upgrades) K3S with the official install script.

    `url` (agents and joining servers): wait until that API answers first. With `bundle`, the staged
    binary and images are put in place and the script runs with INSTALL_K3S_SKIP_DOWNLOAD; else the node
    fetches the script from get.k3s.io and the script downloads the pinned release.
    """
    command = "server" if role == "server" else "agent"
    lines = ["set -e"]
    if url:
        lines.append(wait_for_server(url, server))
    env = [f"INSTALL_K3S_VERSION={q(version)}", "INSTALL_K3S_FORCE_RESTART=true"]
    if bundle is not None:
        binary = bundle.binary(arch)
        if binary is None:
            raise StepError(f"the air-gap bundle {bundle.dir} has no {BINARIES.get(arch, arch)}")
        wrong = q(f"the air-gap bundle's k3s is not {version} (the version pinned in k8s/versions.yml)")
        lines += [
            f"{q(staged_path(binary))} --version | grep -qF {q(f'k3s version {version} ')} "
            f"|| {{ printf '%s\\n' {wrong} >&2; exit 1; }}",
            f"install -m 0755 -o root -g root -- {q(staged_path(binary))} {BIN}",
        ]
        images = bundle.images(arch)
        if images is not None:
            lines += [f"mkdir -p -- {IMAGES_DIR}",
                      f"cp -f -- {q(staged_path(images))} {q(f'{IMAGES_DIR}/{images.name}')}"]
        env.append("INSTALL_K3S_SKIP_DOWNLOAD=true")
    if bundle is not None and bundle.script is not None:
        lines.append(f"script={q(staged_path(bundle.script))}")
    else:
        lines += ['script=$(mktemp)', "trap 'rm -f -- \"$script\"' EXIT",
                  f'curl -sfL --retry 3 -o "$script" {INSTALL_URL}']
    lines.append(f'{" ".join(env)} timeout {INSTALL_TIMEOUT_S} sh "$script" {command}')
    return "\n".join(lines)


@dataclass(frozen=True)
class InstallFacts:
    """What is installed, the unit's presence, the architecture, and whether get.k3s.io answers."""

    version: str | None
    unit: bool
    arch: str
    machine: str
    fetch_ok: bool
    fetch_error: str


class K3sInstall:
    """Install K3S at the pinned version through the official script; nothing when it already is.

    A node that runs another version is left to the rolling upgrade (one node at a time, drained), unless
    `upgrade` is set: the rolling upgrade itself runs this step that way on each node in turn.
    """

    def __init__(self, inv: Inventory, host: Host, version: str, bundle: Airgap | None, *,
                 upgrade: bool = False, selected: frozenset[str] | None = None) -> None:
        self.inv, self.host, self.version, self.bundle, self.upgrade = inv, host, version, bundle, upgrade
        self.unit = unit_of(host)
        self.selected = selected   # the hosts of this run (--limit); None: all

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"k3s {self.version} ({self.unit})"

    def _ready(self) -> str:
        return (f"{BIN} --version 2>/dev/null | grep -qF {q(f'k3s version {self.version} ')}"
                f" && [ -f {q(f'{SYSTEMD_DIR}/{self.unit}.service')} ]")

    def probes(self) -> Mapping[str, str]:
        """The installed version, the unit file, the architecture; get.k3s.io only when it may be needed."""
        fetch = "true"
        if self.bundle is None or self.bundle.script is None:
            fetch = (f"if {self._ready()}; then exit 0; fi; "
                     "command -v curl >/dev/null || { echo 'curl is not installed'; exit 127; }; "
                     f"curl -sS -o /dev/null --connect-timeout 5 --max-time 10 {INSTALL_URL} 2>&1")
        return {
            "version": f"{BIN} --version",
            "unit": f"test -f {q(f'{SYSTEMD_DIR}/{self.unit}.service')}",
            "arch": "uname -m",
            "fetch": fetch,
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> InstallFacts:
        """Type the outputs."""
        version = installed_version(outputs["version"].stdout) if outputs["version"].ok else None
        machine = outputs["arch"].stdout.strip()
        fetch = outputs["fetch"]
        error = " ".join(fetch.stdout.split())[:200] or f"exit code {fetch.exit_code}"
        return InstallFacts(version, outputs["unit"].ok, ARCHES.get(machine, ""), machine, fetch.ok,
                            "" if fetch.ok else error)

    def decide(self, facts: InstallFacts) -> Decision:
        """Ok, left to the rolling upgrade, an explicit skip (no binary in reach), or the install."""
        if facts.version == self.version and facts.unit:
            return Ok(f"k3s {self.version} is installed and runs as {self.unit}")
        primary = primary_server(self.inv).name
        if facts.version and facts.unit and facts.version != self.version and not self.upgrade:
            if self.selected is not None and primary not in self.selected:
                return Ok(f"k3s {facts.version} is installed, {self.version} is pinned: the rolling upgrade runs "
                          f"from {primary}, which this run leaves out: add {primary} to --limit to upgrade "
                          f"{self.host.name}")
            return Ok(f"k3s {facts.version} is installed, {self.version} is pinned: the rolling upgrade run from "
                      f"{primary} upgrades the nodes one at a time")
        if not facts.arch:
            raise StepError(f"K3S has no release for this architecture ({facts.machine or 'unknown'})")
        if self.bundle is None and not facts.fetch_ok:
            reason = (f"no k3s binary available on {self.host.name}: k3s is not installed, no air-gap bundle "
                      f"was given ({AIRGAP_ENV} or --airgap DIR), and {INSTALL_URL} is unreachable from it "
                      f"({facts.fetch_error})")
            if facts.version:
                raise StepError(reason.replace("k3s is not installed", f"k3s {facts.version} is installed"))
            return skipped(reason)
        if self.bundle is not None and self.bundle.script is None and not facts.fetch_ok:
            raise StepError(f"the air-gap bundle {self.bundle.dir} has no install.sh and {INSTALL_URL} is "
                            f"unreachable from {self.host.name} ({facts.fetch_error}); add the script "
                            f"(curl -sfL {INSTALL_URL} -o install.sh) to the bundle")
        joins = self.host.name != primary
        script = install_script(role=self.host.role, version=self.version,
                                url=server_url(self.inv) if joins else "", server=primary,
                                bundle=self.bundle, arch=facts.arch)
        what = f"upgrade k3s {facts.version} -> {self.version}" if facts.version else f"install k3s {self.version}"
        source = f"air-gap bundle {self.bundle.dir}" if self.bundle else INSTALL_URL
        diff = f"{what} as {self.unit} ({self.host.role}, {facts.arch}, from {source})"
        if joins:
            diff += f", joining {server_url(self.inv)}"
        # the script (re)starts the unit with the current files: no second restart for them in this run
        done = frozenset(changed_mark(p) for p in (CONFIG, KUBELET_CONFIG, TOKEN_FILE))
        return Change(diff, [Command(script)], clears=done)


# --- the cluster, seen from the first server --------------------------------------------------------------


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


def _cluster_facts(out: ProbeOutput, server: str) -> ClusterFacts:
    if out.exit_code == NOT_RUNNING:
        return ClusterFacts(None, f"k3s is not running on {server}", running=False)
    if not out.ok:
        return ClusterFacts(None, f"the API on {server} did not list the nodes (exit code {out.exit_code})")
    try:
        return ClusterFacts(parse_nodes(out.stdout))
    except (ValueError, KeyError) as err:
        return ClusterFacts(None, f"unreadable node list from {server}: {err}")


def marker_command(path: str, data: Mapping[str, Any]) -> Command:
    """Return the command that leaves a JSON marker on the host (tmpfs: gone at reboot)."""
    from picluster.state._fs import write_command

    write = write_command(path, json.dumps(data, sort_keys=True).encode() + b"\n", mode=0o600, owner="root",
                          group="root")
    return Command(f"mkdir -p -- {q(str(Path(path).parent))}\n" + write.script, stdin=write.stdin)


class RollPlan:
    """On the first server: which nodes run another K3S version than the pinned one; leave the plan.

    With `selected` (the run's --limit), only those nodes are upgraded; the others are named and left.
    """

    def __init__(self, inv: Inventory, version: str, ctl: Controller, selected: frozenset[str] | None = None) -> None:
        self.inv, self.version, self.ctl, self.selected = inv, version, ctl, selected

    @property
    def name(self) -> str:
        """Return the step label."""
        return "rolling upgrade plan"

    def probes(self) -> Mapping[str, str]:
        """The nodes through the server's own kubectl."""
        return {"nodes": NODES_PROBE}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> ClusterFacts:
        """Type the node list."""
        return _cluster_facts(outputs["nodes"], primary_server(self.inv).name)

    def decide(self, facts: ClusterFacts) -> Decision:
        """Nothing to upgrade, or the order to upgrade in (left as a marker for the next step)."""
        if facts.nodes is None:
            return skipped(f"{facts.why}: no cluster to upgrade yet")
        stale = {h.name: facts.nodes[h.name].version for h in self.inv.select(roles=["server", "agent"])
                 if h.name in facts.nodes and facts.nodes[h.name].version not in ("", self.version)}
        if not stale:
            return Ok(f"every registered node runs {self.version}")
        left = sorted(n for n in stale if self.selected is not None and n not in self.selected)
        left_note = f"not in --limit, left on their version: {', '.join(f'{n} ({stale[n]})' for n in left)}"
        servers = [h.name for h in self.inv.servers if h.name in stale and h.name not in left]
        agents = [h.name for h in self.inv.agents if h.name in stale and h.name not in left]
        if not servers and not agents:
            return Ok(f"no node of this run to upgrade to {self.version}; {left_note}")
        order = ", ".join(f"{n} ({stale[n]})" for n in servers + agents)
        diff = (f"rolling upgrade to {self.version}, servers first, one node at a time (cordon, drain, upgrade, "
                f"wait Ready, uncordon): {order}" + (f"; {left_note}" if left else ""))
        return Change(diff, [marker_command(ROLL_PENDING, {"version": self.version, "servers": servers,
                                                           "agents": agents, "run": self.ctl.run_id})])


Act = Callable[[str], object]


@dataclass(frozen=True)
class RollFacts:
    """What the rolling upgrade did on the controller (nothing when no plan was pending)."""

    pending: bool
    done: tuple[str, ...] = ()
    error: str = ""


def read_marker(out: ProbeOutput) -> dict[str, Any] | None:
    """Return a marker's JSON, None when there is none."""
    if not out.ok or not out.stdout.strip():
        return None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_local_kubeconfig(path: Path, text: str) -> None:
    """Write the kubeconfig on the controller: 0600 from the start, directory 0700, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def kubeconfig_header(server: str, source_sha: str, url: str) -> str:
    """Return the first line of the controller's kubeconfig: where it came from, to tell when it is stale."""
    return f"# picluster: {server}:{SERVER_KUBECONFIG} sha256 {source_sha}, server {url}\n"


def local_kubeconfig_text(raw: str, server: str, url: str) -> str:
    """Return the controller's kubeconfig made from the server's k3s.yaml."""
    from picluster.kube.kubeconfig import rewrite_server

    sha = hashlib.sha256(raw.encode()).hexdigest()
    return kubeconfig_header(server, sha, url) + rewrite_server(raw, url)


@dataclass
class Controller:
    """What the controller-side steps need: where the kubeconfig goes, the API URL, waits and progress."""

    kubeconfig: Path
    api_url: str
    ready_timeout: float = READY_TIMEOUT_S
    drain_timeout: float = 300.0
    poll: float = 2.0
    progress: bool = False
    # markers carry it: a marker an earlier (failed) run left is never acted on, not even in a dry run
    run_id: str = field(default_factory=lambda: _random.token_hex(8))


def kubeconfig_probe(marker: str) -> str:
    """Return the probe that prints the server's kubeconfig only while `marker` is pending."""
    return f"test -f {q(marker)} || exit 0; cat -- {SERVER_KUBECONFIG}"


class Roll:
    """After `RollPlan`: run the pending rolling upgrade from the controller (picluster.kube.rolling)."""

    def __init__(self, inv: Inventory, ctl: Controller, act: Act) -> None:
        self.inv, self.ctl, self.act = inv, ctl, act

    @property
    def name(self) -> str:
        """Return the step label."""
        return "rolling upgrade"

    def probes(self) -> Mapping[str, str]:
        """The pending plan, and the kubeconfig while one is pending."""
        return {"pending": f"cat -- {ROLL_PENDING}", "kubeconfig": kubeconfig_probe(ROLL_PENDING)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RollFacts:
        """With a pending plan: roll, on the controller, through the API (I/O here, as AwaitBoot waits)."""
        plan = read_marker(outputs["pending"])
        if plan is None or plan.get("run") != self.ctl.run_id:
            return RollFacts(False)
        from picluster.kube import Kube
        from picluster.kube.rolling import RollingError, kube_steps, rolling

        server = primary_server(self.inv).name
        try:
            write_local_kubeconfig(self.ctl.kubeconfig,
                                   local_kubeconfig_text(outputs["kubeconfig"].stdout, server, self.ctl.api_url))
            kube = Kube(self.ctl.kubeconfig)
            steps = kube_steps(kube, self.act, servers=plan["servers"], drain_timeout=self.ctl.drain_timeout,
                               ready_timeout=self.ctl.ready_timeout, expect_version=plan["version"],
                               progress=self.ctl.progress, poll=self.ctl.poll)
            done = rolling(plan["servers"], plan["agents"], steps)
        except RollingError as err:
            return RollFacts(True, tuple(err.done), str(err))
        except Exception as err:  # the kubeconfig or the API: said once, at the end of the stage
            return RollFacts(True, (), f"{type(err).__name__}: {err}")
        return RollFacts(True, tuple(done))

    def decide(self, facts: RollFacts) -> Decision:
        """Report the roll (and clear its marker), or fail with where it stopped."""
        if not facts.pending:
            return Ok("no rolling upgrade pending")
        if facts.error:
            raise StepError(f"rolling upgrade stopped: {facts.error}; fix that node and run the stage again "
                            "(it upgrades the nodes still on the old version)")
        return Change(f"upgraded one at a time: {', '.join(facts.done)}", [Command(f"rm -f -- {ROLL_PENDING}")])


@dataclass(frozen=True)
class SettleFacts:
    """The nodes, and the kubeconfig on the server (sha256) and on the controller (first line, mode)."""

    cluster: ClusterFacts
    source_sha: str
    local_header: str | None
    local_mode: int | None


class SettlePlan:
    """On the first server: is every node Ready and labelled, and the controller's kubeconfig current?"""

    def __init__(self, inv: Inventory, ctl: Controller) -> None:
        self.inv, self.ctl = inv, ctl

    @property
    def name(self) -> str:
        """Return the step label."""
        return "nodes Ready, workers labelled, kubeconfig (check)"

    def probes(self) -> Mapping[str, str]:
        """The node list and the sha256 of the server's kubeconfig."""
        return {"nodes": NODES_PROBE, "sha": f"sha256sum < {SERVER_KUBECONFIG}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SettleFacts:
        """Type the outputs; read the controller's copy's first line and mode."""
        sha = outputs["sha"].stdout.split()[0] if outputs["sha"].ok and outputs["sha"].stdout.split() else ""
        header, mode = None, None
        try:
            with self.ctl.kubeconfig.open(encoding="utf-8") as f:
                header = f.readline()
            mode = self.ctl.kubeconfig.stat().st_mode & 0o777
        except OSError:
            pass
        return SettleFacts(_cluster_facts(outputs["nodes"], primary_server(self.inv).name), sha, header, mode)

    def decide(self, facts: SettleFacts) -> Decision:
        """Ok, or what the next step will do (left as a marker)."""
        if not facts.cluster.running:
            return skipped(f"{facts.cluster.why}: no API to wait on, no kubeconfig to fetch")
        todo: list[str] = []
        if facts.cluster.nodes is None:       # k3s runs but its API does not answer yet: the next step waits
            todo.append(f"wait for the API ({facts.cluster.why})")
        nodes = facts.cluster.nodes or {}
        server = primary_server(self.inv).name
        header = kubeconfig_header(server, facts.source_sha, self.ctl.api_url)
        if facts.local_header != header:
            todo.append(f"fetch {SERVER_KUBECONFIG} from {server} to {self.ctl.kubeconfig} (0600), "
                        f"server {self.ctl.api_url}")
        elif facts.local_mode != 0o600:
            todo.append(f"mode of {self.ctl.kubeconfig}: {facts.local_mode or 0:04o} -> 0600")
        k3s_hosts = self.inv.select(roles=["server", "agent"])
        waiting = [h.name for h in k3s_hosts if h.name not in nodes or not nodes[h.name].ready]
        if waiting:
            todo.append(f"wait until Ready: {', '.join(waiting)}")
        from picluster.kube.nodes import WORKER_LABELS

        unlabelled = [h.name for h in self.inv.agents
                      if any((nodes[h.name].labels if h.name in nodes else {}).get(k) != v
                             for k, v in WORKER_LABELS.items())]
        if unlabelled:
            todo.append(f"label as workers ({', '.join(f'{k}={v}' for k, v in WORKER_LABELS.items())}): "
                        + ", ".join(unlabelled))
        if not todo:
            return Ok(f"{len(k3s_hosts)} nodes Ready, workers labelled, {self.ctl.kubeconfig} is current")
        return Change("\n".join(todo), [marker_command(SETTLE_PENDING, {"todo": todo, "run": self.ctl.run_id})])


@dataclass(frozen=True)
class SettledFacts:
    """What the settle did on the controller."""

    pending: bool
    done: tuple[str, ...] = ()
    error: str = ""


class Settle:
    """After `SettlePlan`: fetch the kubeconfig, wait for every node Ready, label the workers (API)."""

    def __init__(self, inv: Inventory, ctl: Controller) -> None:
        self.inv, self.ctl = inv, ctl

    @property
    def name(self) -> str:
        """Return the step label."""
        return "nodes Ready, workers labelled, kubeconfig"

    def probes(self) -> Mapping[str, str]:
        """The pending marker, and the kubeconfig while it is pending."""
        return {"pending": f"cat -- {SETTLE_PENDING}", "kubeconfig": kubeconfig_probe(SETTLE_PENDING)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SettledFacts:
        """With the marker: act on the controller (I/O here, as AwaitBoot waits)."""
        marker = read_marker(outputs["pending"])
        if marker is None or marker.get("run") != self.ctl.run_id:
            return SettledFacts(False)
        from picluster.kube import Kube
        from picluster.kube.nodes import WORKER_LABELS, label
        from picluster.kube.wait import wait_ready

        server = primary_server(self.inv)
        done: list[str] = []
        try:
            text = local_kubeconfig_text(outputs["kubeconfig"].stdout, server.name, self.ctl.api_url)
            write_local_kubeconfig(self.ctl.kubeconfig, text)
            done.append(f"kubeconfig written to {self.ctl.kubeconfig} (0600), server {self.ctl.api_url}")
            kube = Kube(self.ctl.kubeconfig)
            names = [h.name for h in self.inv.select(roles=["server", "agent"])]
            wait_ready(kube, names, self.ctl.ready_timeout, servers=[h.name for h in self.inv.servers],
                       interval=self.ctl.poll, progress=self.ctl.progress)
            done.append(f"Ready: {', '.join(names)}")
            labelled = [h.name for h in self.inv.agents if label(kube, h.name, dict(WORKER_LABELS))]
            if labelled:
                done.append(f"labelled as workers: {', '.join(labelled)}")
        except Exception as err:  # KubeError and the kubeconfig's own: said once, at the end of the stage
            return SettledFacts(True, tuple(done), str(err) if str(err) else type(err).__name__)
        return SettledFacts(True, tuple(done))

    def decide(self, facts: SettledFacts) -> Decision:
        """Report what was done (and clear the marker), or fail with what is missing."""
        if not facts.pending:
            return Ok("nothing pending")
        if facts.error:
            raise StepError(facts.error)
        return Change("\n".join(facts.done), [Command(f"rm -f -- {SETTLE_PENDING}")])


# --- the plan -------------------------------------------------------------------------------------------


@dataclass
class K3sPlan:
    """The k3s stage's planner: one per run (the token is read, or made, once)."""

    inv: Inventory
    token: str
    version: str
    bundle: Airgap | None
    ctl: Controller
    error: str = ""     # a problem found while planning (bad bundle, unreadable secret): every host fails with it
    selected: frozenset[str] | None = None   # the hosts of this run (--limit), told by the runner

    def __call__(self, host: Host) -> Sequence[AnyStep]:
        if self.error:
            raise ValueError(self.error)
        return host_steps(self, host)

    def select_hosts(self, names: frozenset[str]) -> None:
        """Remember the run's hosts: the rolling upgrade touches only those (`remote.SelectsHosts`)."""
        self.selected = names

    def act(self, name: str) -> None:
        """The rolling upgrade's SSH part: upgrade one node with its own connection; raise if it failed."""
        from picluster.remote import run_host

        host = self.inv.hosts[name]
        result = run_host(host, lambda h: upgrade_steps(self, h))
        if result.status in ("failed", "unreachable"):
            failed = [s for s in result.steps if s.status == "failed"]
            why = result.message or (failed[0].message or (failed[0].error.stderr_tail if failed[0].error else "")
                                     if failed else "")
            raise RuntimeError(f"upgrading k3s on {name} failed: {why}")


def upgrade_steps(plan: K3sPlan, host: Host) -> list[AnyStep]:
    """Return what the rolling upgrade runs on one node: the bundle staged, then the install."""
    steps: list[AnyStep] = [AirgapStaged(plan.bundle)] if plan.bundle else []
    return [*steps, K3sInstall(plan.inv, host, plan.version, plan.bundle, upgrade=True)]


def host_steps(plan: K3sPlan, host: Host) -> list[AnyStep]:
    """Return the k3s stage's steps for one host, in order."""
    inv = plan.inv
    unit = unit_of(host)
    unit_file = f"{SYSTEMD_DIR}/{unit}.service"
    steps: list[AnyStep] = [
        Apt(["curl"]),
        GracefulShutdown(host),
        Batch("k3s configuration and token", [
            Directory(K3S_DIR),
            File(CONFIG, config_yaml(inv, host)),
            File(KUBELET_CONFIG, kubelet_config(inv, host)),
            File(TOKEN_FILE, plan.token + "\n", mode=0o600, secret=True),
        ]),
    ]
    if plan.bundle is not None:
        steps.append(AirgapStaged(plan.bundle))
    steps += [
        K3sInstall(inv, host, plan.version, plan.bundle, selected=plan.selected),
        OnlyIf(Service(unit, enabled=True, running=True, restart_on=[CONFIG, KUBELET_CONFIG, TOKEN_FILE]),
               f"test -f {q(unit_file)}", f"{unit} is not installed on {host.name} (see the install step)"),
    ]
    if host.name == primary_server(inv).name:
        steps += [RollPlan(inv, plan.version, plan.ctl, plan.selected), Roll(inv, plan.ctl, plan.act),
                  SettlePlan(inv, plan.ctl), Settle(inv, plan.ctl)]
    return steps


def local_path_kept_non_default(host: Host) -> list[AnyStep]:
    """On a server: K3S stops re-applying its local-storage manifest, once it has deployed it.

    K3S rewrites and re-applies its packaged manifests at every start, which makes local-path the default
    StorageClass again beside Longhorn after each reboot (k3s-io/k3s#3441): two defaults, and a PVC without
    a class is refused. A `.skip` file beside the manifest stops that; local-path stays, non-default, at the
    version K3S first deployed.
    """
    if host.role != "server":
        return []
    note = "# picluster: K3S does not re-apply local-storage.yaml (local-path stays non-default; Longhorn is)\n"
    return [OnlyIf(File(LOCAL_STORAGE + ".skip", note), f"test -f {q(LOCAL_STORAGE)}",
                   f"K3S has not deployed its local-storage manifest on {host.name} (k3s is not running here)")]


def plan(inv: Inventory, *, airgap: str | os.PathLike[str] | None = None, version: str | None = None,
         kubeconfig: Path | None = None, api_url: str | None = None,
         ready_timeout: float = READY_TIMEOUT_S, progress: bool | None = None) -> K3sPlan:
    """Return the planner `cluster.up` and `k3s.apply` give the runner.

    The cluster token comes from the controller's secrets store (made on first use, 0600); the air-gap
    bundle from `airgap` or $PICLUSTER_K3S_AIRGAP; the version from k8s/versions.yml.
    """
    from picluster.secrets import SecretError, ensure_secret
    from picluster.versions import k3s_version

    ctl = Controller(kubeconfig=kubeconfig or kubeconfig_path(inv), api_url=api_url or server_url(inv),
                     ready_timeout=ready_timeout,
                     progress=sys.stderr.isatty() if progress is None else progress)
    token, bundle, error = "", None, ""
    try:
        bundle = Airgap.from_option(airgap)
        token = ensure_secret(token_secret(inv))
    except (ValueError, SecretError) as err:
        error = str(err)
    return K3sPlan(inv=inv, token=token, version=version or k3s_version(), bundle=bundle, ctl=ctl, error=error)
