"""The k3s stage: plans per role, rendered files and install commands (golden), step decisions (facts in →
decision out), the token never in argv or output, and the controller-side orchestration (settle: kubeconfig,
Ready, labels; rolling upgrade) against kmock's Kubernetes API over HTTP."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import kmock as km
import pytest
import yaml
from kube_support import TOKEN, all_evictions, allow_eviction, node, pod, run, seed, server_faults
from stage_support import decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.remote import Change, Ok, ProbeOutput, StepError, changed_mark
from picluster.remote.phases import ControllerContext, ControllerPhase, HostPhase, ResultTable, RunOptions
from picluster.stages import STAGES, k3s
from picluster.stages.k3s.cluster import ClusterAccess, RollingUpgrade, ServerFacts, Settle, SettleFacts, cluster_facts
from picluster.state.skip import is_skipped
from picluster.versions import Script

VERSION = "v1.24.3+k3s1"
@pytest.fixture(autouse=True)
def secrets_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own secrets store and no air-gap bundle from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(k3s.AIRGAP_ENV, raising=False)
    monkeypatch.delenv("PICLUSTER_KUBECONFIG", raising=False)
    return tmp_path / "config"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path, reference_data())


@pytest.fixture
def plan(inv: Inventory, tmp_path: Path) -> k3s.K3sRun:
    return k3s.prepare(inv, RunOptions(kubeconfig=tmp_path / "kube" / "config"))


# --- plans -------------------------------------------------------------------------------------------


def test_the_stage_installs_on_the_hosts_then_rolls_and_settles_from_the_controller(inv: Inventory) -> None:
    host_phase, controller = next(s for s in STAGES if s.name == "k3s").phases(inv, RunOptions())
    assert isinstance(host_phase, HostPhase) and isinstance(controller, ControllerPhase)
    server = [s.name for s in host_phase.plan(inv.hosts["node1"])]
    assert server == ["apt curl", "graceful node shutdown settings", "k3s configuration and token",
                      f"k3s {VERSION} (k3s)", "service k3s"]
    agent = [s.name for s in host_phase.plan(inv.hosts["node2"])]
    assert agent == [*server[:3], f"k3s {VERSION} (k3s-agent)", "service k3s-agent"]


def test_an_airgap_bundle_is_staged_before_the_install(inv: Inventory, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    p = k3s.prepare(inv, RunOptions(airgap=bundle))
    names = [s.name for s in p.host_plan(inv.hosts["node2"])]
    assert names.index(f"air-gap bundle staged in {k3s.STAGING}") == names.index(f"k3s {VERSION} (k3s-agent)") - 1


def test_a_bundle_that_is_not_a_directory_fails_every_host_with_why(inv: Inventory, tmp_path: Path) -> None:
    p = k3s.prepare(inv, RunOptions(airgap=tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"air-gap bundle .*nope is not a directory"):
        p.host_plan(inv.hosts["node1"])


# --- the token -------------------------------------------------------------------------------------------


def test_the_token_is_made_once_0600_and_never_in_a_command_or_diff(inv: Inventory, secrets_home: Path) -> None:
    first = k3s.prepare(inv, RunOptions())
    path = secrets_home / "picluster" / "secrets" / f"k3s_token_{inv.cluster.name}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == first.token and len(first.token) == 64
    assert k3s.prepare(inv, RunOptions()).token == first.token            # read back, not made again

    batch = first.host_plan(inv.hosts["node2"])[2]
    missing = {k: out("", 1) for k in batch.probes()}
    decision = decide(batch, missing)
    assert isinstance(decision, Change)
    assert first.token not in decision.diff
    assert "cluster-token: content created (secret, not shown)" in decision.diff
    for command in decision.commands:
        assert first.token not in command.script                       # only ever on stdin, as a file's content
    assert any(first.token.encode() in base64.b64decode(c.stdin or b"") for c in decision.commands)


def test_the_environment_overrides_the_stored_token(inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"PICLUSTER_SECRET_K3S_TOKEN_{inv.cluster.name.upper()}", "from-env")
    assert k3s.prepare(inv, RunOptions()).token == "from-env"


# --- rendered files (golden) -------------------------------------------------------------------------------

SERVER_CONFIG = """\
# Managed by picluster (k3s stage) from inventory.yml; changes here are replaced.
# K3S reads this file at start: a change restarts k3s.
token-file: /etc/rancher/k3s/cluster-token
node-name: node1
node-ip: 10.0.0.11
write-kubeconfig-mode: "0600"
disable:
  - servicelb
node-taint:
  - node-role.kubernetes.io/master=true:NoSchedule
kube-controller-manager-arg:
  - bind-address=0.0.0.0
kube-scheduler-arg:
  - bind-address=0.0.0.0
kube-proxy-arg:
  - metrics-bind-address=0.0.0.0
kubelet-arg:
  - config=/etc/rancher/k3s/kubelet.config
"""

AGENT_CONFIG = """\
# Managed by picluster (k3s stage) from inventory.yml; changes here are replaced.
# K3S reads this file at start: a change restarts k3s-agent.
server: https://10.0.0.11:6443
token-file: /etc/rancher/k3s/cluster-token
node-name: node2
node-ip: 10.0.0.12
kube-proxy-arg:
  - metrics-bind-address=0.0.0.0
node-label:
  - node_type=worker
  - disktype=ssd
kubelet-arg:
  - config=/etc/rancher/k3s/kubelet.config
"""

KUBELET_CONFIG = """\
# Managed by picluster (k3s stage) from inventory.yml: graceful node shutdown.
# Pods get 30s at shutdown, the last 10s of them kept for critical pods; logind lets
# the kubelet delay shutdown that long (InhibitDelayMaxSec=30, the os stage's drop-in).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
shutdownGracePeriod: 30s
shutdownGracePeriodCriticalPods: 10s
"""


def test_server_config_yaml(inv: Inventory) -> None:
    assert k3s.config_yaml(inv, inv.hosts["node1"]) == SERVER_CONFIG


def test_agent_config_yaml_joins_the_server_with_its_labels(tmp_path: Path) -> None:
    data = reference_data()
    data["hosts"]["node2"]["vars"] = {"k3s_node_labels": {"disktype": "ssd"}}
    inv = write_inventory(tmp_path, data)
    assert k3s.config_yaml(inv, inv.hosts["node2"]) == AGENT_CONFIG


def test_config_yaml_is_the_yaml_k3s_reads(inv: Inventory) -> None:
    data = yaml.safe_load(k3s.config_yaml(inv, inv.hosts["node1"]))
    assert data["disable"] == ["servicelb"] and data["write-kubeconfig-mode"] == "0600"
    assert data["kubelet-arg"] == ["config=/etc/rancher/k3s/kubelet.config"]


def test_a_second_server_joins_the_first_which_starts_the_cluster(tmp_path: Path) -> None:
    data = reference_data()
    data["hosts"]["node2"]["role"] = "server"
    inv = write_inventory(tmp_path, data)
    first, second = (yaml.safe_load(k3s.config_yaml(inv, inv.hosts[n])) for n in ("node1", "node2"))
    assert first["cluster-init"] is True and "server" not in first
    assert second["server"] == "https://10.0.0.11:6443" and "cluster-init" not in second


def test_kubelet_config(inv: Inventory) -> None:
    assert k3s.kubelet_config(inv, inv.hosts["node3"]) == KUBELET_CONFIG


def test_kubelet_config_follows_the_inventory_and_matches_the_os_stages_logind(tmp_path: Path) -> None:
    data = reference_data()
    data["vars"]["kubelet_shutdown_grace_period"] = "2m"
    data["vars"]["kubelet_shutdown_grace_period_critical_pods"] = 30
    inv = write_inventory(tmp_path, data)
    parsed = yaml.safe_load(k3s.kubelet_config(inv, inv.hosts["node2"]))
    assert (parsed["shutdownGracePeriod"], parsed["shutdownGracePeriodCriticalPods"]) == ("120s", "30s")
    from picluster.stages.os import logind_dropin

    assert "InhibitDelayMaxSec=120\n" in logind_dropin(inv.hosts["node2"])


# --- install commands (golden) ---------------------------------------------------------------------------

PIN = Script("k3s-install", "https://raw.githubusercontent.com/k3s-io/k3s/{version}/install.sh", "ab" * 32)
SERVER_INSTALL = """\
set -e
script=$(mktemp)
trap 'rm -f -- "$script"' EXIT
curl -sfL --retry 3 -o "$script" https://raw.githubusercontent.com/k3s-io/k3s/v1.24.3%2Bk3s1/install.sh
printf '%s  %s\\n' abababababababababababababababababababababababababababababababab "$script" | sha256sum -c \
--quiet - >/dev/null 2>&1 || { printf '%s\\n' 'the K3S install script is not the one pinned in k8s/versions.yml \
(scripts.k3s-install.sha256 differs); not run' >&2; exit 1; }
INSTALL_K3S_VERSION=v1.24.3+k3s1 INSTALL_K3S_FORCE_RESTART=true timeout 900 sh "$script" server"""

AGENT_AIRGAP_INSTALL = """\
set -e
i=0
until curl -ks -o /dev/null --max-time 5 https://10.0.0.11:6443/ping; do
  i=$((i + 1)); [ "$i" -lt 150 ] || { printf '%s\\n' 'the K3S server at https://10.0.0.11:6443 did not answer \
within 300s; on node1 look at `systemctl status k3s` and `journalctl -u k3s`' >&2; exit 1; }
  sleep 2
done
/var/lib/picluster/k3s/k3s-arm64 --version | grep -qF 'k3s version v1.24.3+k3s1 ' || { printf '%s\\n' 'the \
air-gap bundle'"'"'s k3s is not v1.24.3+k3s1 (the version pinned in k8s/versions.yml)' >&2; exit 1; }
install -m 0755 -o root -g root -- /var/lib/picluster/k3s/k3s-arm64 /usr/local/bin/k3s
mkdir -p -- /var/lib/rancher/k3s/agent/images
cp -f -- /var/lib/picluster/k3s/k3s-airgap-images-arm64.tar.zst \
/var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst
script=/var/lib/picluster/k3s/install.sh
INSTALL_K3S_VERSION=v1.24.3+k3s1 INSTALL_K3S_FORCE_RESTART=true INSTALL_K3S_SKIP_DOWNLOAD=true timeout 900 \
sh "$script" agent"""


def make_bundle(root: Path, *, script: bool = True) -> k3s.Airgap:
    root.mkdir(parents=True, exist_ok=True)
    (root / "k3s-arm64").write_bytes(b"\x7fELF arm64 k3s")
    (root / "k3s").write_bytes(b"\x7fELF amd64 k3s")
    (root / "k3s-airgap-images-arm64.tar.zst").write_bytes(b"images")
    if script:
        (root / "install.sh").write_text("#!/bin/sh\n")
    return k3s.Airgap(root)


def test_server_install_fetches_the_official_script_with_the_pinned_version() -> None:
    assert k3s.install_script(role="server", version=VERSION, pin=PIN) == SERVER_INSTALL.replace("\\\n", "")


def test_an_install_script_without_a_pinned_digest_is_refused() -> None:
    with pytest.raises(StepError, match=r"no sha256 pinned for the K3S install script \(https://raw\.githubusercontent"
                                        r"\.com/k3s-io/k3s/v1\.24\.3%2Bk3s1/install\.sh\): add scripts\.k3s-install"):
        k3s.install_script(role="server", version=VERSION, pin=Script("k3s-install", PIN.url_template, ""))


@pytest.mark.parametrize("right", [True, False], ids=["pinned-digest", "other-digest"])
def test_the_fetched_install_script_runs_only_with_the_pinned_digest(tmp_path: Path, right: bool) -> None:
    """The generated command, run by a real shell; the script comes over file:// and leaves a mark if it runs."""
    import hashlib
    import subprocess

    served = tmp_path / VERSION / "install.sh"   # file:// decodes the %2B of the URL
    served.parent.mkdir()
    served.write_text(f"#!/bin/sh\necho \"$INSTALL_K3S_VERSION $1\" > {tmp_path}/ran\n")
    digest = hashlib.sha256(served.read_bytes()).hexdigest() if right else "0" * 64
    pin = Script("k3s-install", f"file://{tmp_path}/{{version}}/install.sh", digest)
    done = subprocess.run(["sh", "-c", k3s.install_script(role="server", version=VERSION, pin=pin)],
                          capture_output=True, text=True, timeout=60)
    if right:
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "ran").read_text() == f"{VERSION} server\n"
    else:
        assert done.returncode == 1 and not (tmp_path / "ran").exists()
        assert done.stderr == ("the K3S install script is not the one pinned in k8s/versions.yml "
                               "(scripts.k3s-install.sha256 differs); not run\n")


def test_agent_airgap_install_waits_for_the_server_then_installs_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    script = k3s.install_script(role="agent", version=VERSION, url="https://10.0.0.11:6443", server="node1",
                                bundle=bundle, arch="arm64")
    assert script == AGENT_AIRGAP_INSTALL.replace("\\\n", "")


def test_install_commands_are_valid_sh(tmp_path: Path) -> None:
    import subprocess

    bundle = make_bundle(tmp_path / "b")
    for script in (SERVER_INSTALL.replace("\\\n", ""), k3s.install_script(role="agent", version=VERSION, url="https://x:6443",
                                                      server="n", bundle=bundle, arch="arm64")):
        subprocess.run(["sh", "-n", "-c", script], check=True)


# --- the install step ---------------------------------------------------------------------------------------


def install_outputs(version: str | None = VERSION, *, unit: bool = True, arch: str = "aarch64",
                    fetch: ProbeOutput | None = None) -> dict[str, ProbeOutput]:
    return {"version": out(f"k3s version {version} (990ba0e8)\ngo version go1.18.1\n") if version else out("", 127),
            "unit": out("", 0 if unit else 1), "arch": out(arch + "\n"), "fetch": fetch or out("")}


def test_the_pinned_version_installed_is_nothing_to_do(inv: Inventory) -> None:
    step = k3s.K3sInstall(inv, inv.hosts["node1"], VERSION, None)
    assert decide(step, install_outputs()) == Ok(f"k3s {VERSION} is installed and runs as k3s")


def test_nothing_installed_and_nothing_in_reach_is_an_explicit_skip(inv: Inventory) -> None:
    step = k3s.K3sInstall(inv, inv.hosts["node2"], VERSION, None)
    fetch = out("curl: (6) Could not resolve host: raw.githubusercontent.com\n", 6)
    decision = decide(step, install_outputs(None, unit=False, fetch=fetch))
    assert is_skipped(decision)
    assert decision.reason == (
        "skipped: no k3s binary available on node2: k3s is not installed, no air-gap bundle was given "
        "(PICLUSTER_K3S_AIRGAP or --airgap DIR), and https://raw.githubusercontent.com is unreachable from it "
        "(curl: (6) Could not resolve host: raw.githubusercontent.com)")


def test_a_fresh_agent_installs_and_its_files_need_no_second_restart(inv: Inventory) -> None:
    step = k3s.K3sInstall(inv, inv.hosts["node2"], VERSION, None, pin=PIN)
    decision = decide(step, install_outputs(None, unit=False))
    assert isinstance(decision, Change)
    assert decision.diff == (f"install k3s {VERSION} as k3s-agent (agent, arm64, from "
                             "https://raw.githubusercontent.com/k3s-io/k3s/v1.24.3%2Bk3s1/install.sh), "
                             "joining https://10.0.0.11:6443")
    assert decision.commands[0].script == k3s.install_script(role="agent", version=VERSION,
                                                             url="https://10.0.0.11:6443", server="node1", pin=PIN)
    assert changed_mark(k3s.CONFIG) in decision.clears


def test_another_version_is_left_to_the_rolling_upgrade_unless_it_is_the_upgrade(inv: Inventory) -> None:
    old = install_outputs("v1.24.2+k3s1")
    left = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None), old)
    assert left == Ok(f"k3s v1.24.2+k3s1 is installed, {VERSION} is pinned: the rolling upgrade run from node1 "
                      "upgrades the nodes one at a time")
    upgrade = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None, upgrade=True, pin=PIN), old)
    assert isinstance(upgrade, Change) and upgrade.diff.startswith(f"upgrade k3s v1.24.2+k3s1 -> {VERSION}")


def test_an_upgrade_with_nothing_in_reach_fails(inv: Inventory) -> None:
    step = k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None, upgrade=True)
    with pytest.raises(StepError, match=r"k3s v1.24.2\+k3s1 is installed.*unreachable"):
        decide(step, install_outputs("v1.24.2+k3s1", fetch=out("curl: (28) timeout", 28)))


def test_airgap_install_uses_the_bundle_for_the_nodes_architecture(inv: Inventory, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    step = k3s.K3sInstall(inv, inv.hosts["node1"], VERSION, bundle)
    assert step.probes()["fetch"] == "true"                  # the bundle has the script: no need for get.k3s.io
    decision = decide(step, install_outputs(None, unit=False, arch="x86_64"))
    assert isinstance(decision, Change)
    assert f"install -m 0755 -o root -g root -- {k3s.STAGING}/k3s /usr/local/bin/k3s" in decision.commands[0].script
    assert "INSTALL_K3S_SKIP_DOWNLOAD=true" in decision.commands[0].script


def test_airgap_stage_uploads_only_what_differs_and_refuses_a_missing_architecture(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    step = k3s.AirgapStaged(bundle)
    sha = hashlib.sha256(b"\x7fELF arm64 k3s").hexdigest()
    staged = out(f"{sha}  {k3s.STAGING}/k3s-arm64\n", 1)
    decision = decide(step, {"arch": out("aarch64\n"), "staged": staged})
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        f"upload {bundle.dir}/k3s-airgap-images-arm64.tar.zst -> {k3s.STAGING}/k3s-airgap-images-arm64.tar.zst "
        "(6 bytes)", f"upload {bundle.dir}/install.sh -> {k3s.STAGING}/install.sh (10 bytes)"]
    uploads = [c for c in decision.commands if c.stdin_file is not None]      # streamed, never read whole
    assert [c.stdin_file for c in uploads] == [bundle.dir / "k3s-airgap-images-arm64.tar.zst",
                                               bundle.dir / "install.sh"]
    assert all(c.stdin is None for c in decision.commands)
    with pytest.raises(StepError, match=r"has no k3s-armhf for this armv7l host"):
        decide(step, {"arch": out("armv7l\n"), "staged": out("", 1)})


# --- graceful shutdown ---------------------------------------------------------------------------------


def shutdown_outputs(busctl: str = "t 30000000", config: str = "") -> dict[str, ProbeOutput]:
    return {"busctl": out(busctl + "\n", 0 if busctl else 1), "config": out(config, 0 if config else 1)}


def test_logind_delay_at_the_grace_period_is_fine(inv: Inventory) -> None:
    decision = decide(k3s.GracefulShutdown(inv.hosts["node1"]), shutdown_outputs())
    assert decision == Ok("shutdownGracePeriod 30s (critical pods 10s) within logind's InhibitDelayMaxSec 30s "
                          "(logind (busctl))")


def test_logind_delay_below_the_grace_period_is_a_clear_error(inv: Inventory) -> None:
    config = "# /etc/systemd/logind.conf\n[Login]\n#InhibitDelayMaxSec=5\n# /usr/lib/...\nInhibitDelayMaxSec=20s\n"
    with pytest.raises(StepError) as err:
        decide(k3s.GracefulShutdown(inv.hosts["node1"]), shutdown_outputs("", config))
    assert "logind InhibitDelayMaxSec is 20s, below shutdownGracePeriod (30s)" in str(err.value)
    assert "run it, then this stage again" in str(err.value)


def test_no_logind_setting_means_its_5s_default(inv: Inventory) -> None:
    with pytest.raises(StepError, match=r"default 5s applies, below shutdownGracePeriod \(30s\)"):
        decide(k3s.GracefulShutdown(inv.hosts["node1"]), shutdown_outputs("", ""))


def test_critical_not_below_total_is_a_clear_error(inv: Inventory) -> None:
    host = inv.hosts["node2"]
    grace = dataclasses.replace(host.settings.shutdown, critical=30)
    bad = dataclasses.replace(host, settings=dataclasses.replace(host.settings, shutdown=grace))
    with pytest.raises(StepError, match=r"shutdownGracePeriodCriticalPods \(30s\) must be less than "
                                        r"shutdownGracePeriod \(30s\)"):
        decide(k3s.GracefulShutdown(bad), shutdown_outputs())


# --- the cluster from the first server: plans from the node list --------------------------------------------


def nodes_json(**versions: str) -> str:
    items = []
    for name, version in versions.items():
        n = node(name, roles=("control-plane", "master") if name == "node1" else (),
                 labels={"kubernetes.io/role": "worker", "node-role.kubernetes.io/worker": "true"}
                 if name != "node1" else None)
        n["status"]["nodeInfo"]["kubeletVersion"] = version
        items.append(n)
    return json.dumps({"kind": "NodeList", "items": items})


ALL_CURRENT = nodes_json(node1=VERSION, node2=VERSION, node3=VERSION, node4=VERSION)
API = "https://10.0.0.11:6443"


def server_facts(nodes: ProbeOutput, kubeconfig: str = "", limit: frozenset[str] | None = None) -> ServerFacts:
    return ServerFacts(cluster_facts(nodes, "node1"), kubeconfig, limit=limit)


def rolling(inv: Inventory, access: ClusterAccess | None = None) -> RollingUpgrade:
    return RollingUpgrade(inv, VERSION, access or ClusterAccess(Path("/nonexistent/kubeconfig"), API),
                          lambda host: [])


def test_the_rolling_upgrade_orders_the_stale_nodes_servers_first(inv: Inventory) -> None:
    step = rolling(inv)
    assert step.decide(server_facts(out(ALL_CURRENT))) == Ok(f"every registered node runs {VERSION}")
    old = "v1.24.2+k3s1"
    decision = step.decide(server_facts(out(nodes_json(node1=old, node2=VERSION, node3=old, node4=old)), "cfg"))
    assert isinstance(decision, k3s.cluster.Roll)
    assert decision.diff.endswith(f": node1 ({old}), node3 ({old}), node4 ({old})")
    assert (decision.servers, decision.agents, decision.kubeconfig) == (("node1",), ("node3", "node4"), "cfg")
    assert decision.commands == []          # nothing left on a host: the controller acts


def test_limit_narrows_the_rolling_upgrade_to_the_runs_hosts(inv: Inventory) -> None:
    old = "v1.24.2+k3s1"
    stale = out(nodes_json(node1=VERSION, node2=old, node3=old, node4=old))
    decision = rolling(inv).decide(server_facts(stale, limit=frozenset({"node1", "node3"})))
    assert isinstance(decision, k3s.cluster.Roll)
    assert decision.diff.endswith(f": node3 ({old}); not in --limit, left on their version: node2 ({old}), "
                                  f"node4 ({old})")
    assert (decision.servers, decision.agents) == ((), ("node3",))
    none = rolling(inv).decide(server_facts(stale, limit=frozenset({"node1"})))
    assert none == Ok(f"no node of this run to upgrade to {VERSION}; not in --limit, left on their version: "
                      f"node2 ({old}), node3 ({old}), node4 ({old})")
    # a run that leaves the first server out neither rolls nor settles, and says so
    out_of_run = ServerFacts(cluster_facts(out("", 1), "node1"), in_run=False, limit=frozenset({"node3"}))
    assert rolling(inv).decide(out_of_run) == Ok("the rolling upgrade runs from node1, which this run leaves out")
    access = ClusterAccess(Path("/nonexistent/kubeconfig"), API)
    assert Settle(inv, access).decide(SettleFacts(out_of_run, None, None)) == \
        Ok("node1 (the first server) is not in this run: the cluster is not waited for")
    # the stale node itself, in a run that leaves the first server out, says how to upgrade it
    alone = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None, selected=frozenset({"node3"})),
                   install_outputs(old))
    assert alone == Ok(f"k3s {old} is installed, {VERSION} is pinned: the rolling upgrade runs from node1, which "
                       "this run leaves out: add node1 to --limit to upgrade node3")


def test_no_k3s_on_the_server_skips_the_cluster_steps_with_the_reason(inv: Inventory, tmp_path: Path) -> None:
    stopped = server_facts(out("", k3s.NOT_RUNNING))
    access = ClusterAccess(tmp_path / "kubeconfig", API)
    assert rolling(inv, access).decide(stopped).reason == \
        "skipped: k3s is not running on node1: no cluster to upgrade yet"
    decision = Settle(inv, access).decide(SettleFacts(stopped, None, None))
    assert decision.reason == "skipped: k3s is not running on node1: no API to wait on, no kubeconfig to fetch"


def test_the_settle_says_what_is_missing_and_nothing_once_done(inv: Inventory, tmp_path: Path) -> None:
    access = ClusterAccess(tmp_path / "kubeconfig", API)
    step = Settle(inv, access)
    partial = server_facts(out(nodes_json(node1=VERSION, node2=VERSION)), "k3s.yaml text")
    decision = step.decide(SettleFacts(partial, None, None))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        f"fetch /etc/rancher/k3s/k3s.yaml from node1 to {access.kubeconfig} (0600), server {API}",
        "wait until Ready: node3, node4",
        "label as workers (kubernetes.io/role=worker, node-role.kubernetes.io/worker=true): node3, node4"]
    sha = hashlib.sha256(b"k3s.yaml text").hexdigest()
    header = k3s.kubeconfig_header("node1", sha, API)
    done = server_facts(out(ALL_CURRENT), "k3s.yaml text")
    assert step.decide(SettleFacts(done, header, 0o600)) == \
        Ok(f"4 nodes Ready, workers labelled, {access.kubeconfig} is current")
    assert step.decide(SettleFacts(done, header, 0o644)).diff == f"mode of {access.kubeconfig}: 0644 -> 0600"


def test_a_running_k3s_whose_api_does_not_answer_yet_is_waited_for(inv: Inventory, tmp_path: Path) -> None:
    step = Settle(inv, ClusterAccess(tmp_path / "kubeconfig", API))
    decision = step.decide(SettleFacts(server_facts(out("", 1), "k3s.yaml"), None, None))
    assert isinstance(decision, Change)
    lines = decision.diff.splitlines()
    assert lines[0] == "wait for the API (the API on node1 did not list the nodes (exit code 1))"
    assert lines[1].startswith("fetch /etc/rancher/k3s/k3s.yaml")
    assert lines[2] == "wait until Ready: node1, node2, node3, node4"


# --- the cluster from the controller: against kmock's API over HTTP ------------------------------------------


def k3s_yaml() -> str:
    """/etc/rancher/k3s/k3s.yaml as K3S writes it: the server at 127.0.0.1, which only works on the server."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "default", "user": {"token": TOKEN}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    })


def access_to(kmock: km.KubernetesEmulator, tmp_path: Path, **kwargs: Any) -> ClusterAccess:
    return ClusterAccess(tmp_path / "ctl" / "kubeconfig", str(kmock.url).rstrip("/"), poll=0.05, **kwargs)


class HostStepsDouble(ControllerContext):
    """Test double of the runner's context: `run_on` calls `on_host` instead of running steps over SSH."""

    def __init__(self, inv: Inventory, on_host: Any) -> None:
        super().__init__(RunOptions(), inv.select(roles=["server", "agent"]), ResultTable([]))
        self.on_host = on_host

    def run_on(self, host: Any, plan: Any) -> Any:
        return self.on_host(host.name)


def acted(step: Any, ctx: ControllerContext, facts: Any) -> str:
    decision = step.decide(facts)
    assert isinstance(decision, Change)
    return str(step.act(ctx, decision))


@pytest.mark.asyncio
async def test_settle_fetches_the_kubeconfig_waits_ready_and_labels_workers(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"), node("node3", ready=False),
         node("node4", labels={"kubernetes.io/role": "worker", "node-role.kubernetes.io/worker": "true"}))
    kmock["list", km.resource("v1/nodes")][2:3] >> (
        lambda: kmock.objects["v1/nodes", None, "node3"].patch(node("node3")))
    access = access_to(kmock, tmp_path, ready_timeout=10)
    step = Settle(inv, access)
    facts = SettleFacts(server_facts(out(nodes_json(node1=VERSION, node2=VERSION)), k3s_yaml()), None, None)

    done = await run(acted, step, HostStepsDouble(inv, None), facts)

    assert done.splitlines() == [
        f"kubeconfig written to {access.kubeconfig} (0600), server {access.api_url}",
        "Ready: node1, node2, node3, node4", "labelled as workers: node2, node3"]
    assert stat.S_IMODE(access.kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(access.kubeconfig.parent.stat().st_mode) == 0o700
    written = access.kubeconfig.read_text()
    assert written.startswith(k3s.kubeconfig_header("node1", hashlib.sha256(k3s_yaml().encode()).hexdigest(),
                                                    access.api_url))
    assert yaml.safe_load(written)["clusters"][0]["cluster"]["server"] == access.api_url
    labels = kmock.objects["v1/nodes", None, "node2"]["metadata"]["labels"]
    assert (labels["kubernetes.io/role"], labels["node-role.kubernetes.io/worker"]) == ("worker", "true")
    assert "kubernetes.io/role" not in kmock.objects["v1/nodes", None, "node1"]["metadata"]["labels"]
    patched = sorted(r.url.path.rsplit("/", 1)[1] for r in kmock["patch", km.resource("v1/nodes")])
    assert patched == ["node2", "node3"]
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_settle_timeout_names_the_missing_node_and_where_to_look(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"), node("node3"))
    step = Settle(inv, access_to(kmock, tmp_path, ready_timeout=0.3))
    facts = SettleFacts(server_facts(out(nodes_json(node1=VERSION)), k3s_yaml()), None, None)

    with pytest.raises(StepError) as err:
        await run(acted, step, HostStepsDouble(inv, None), facts)

    assert "node4 (agent): never registered with the API server" in str(err.value)
    assert "on node4 look at `systemctl status k3s-agent` and `journalctl -u k3s-agent`" in str(err.value)
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_roll_upgrades_servers_then_agents_one_at_a_time_through_the_api(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    import asyncio

    old, new = "v1.24.2+k3s1", VERSION
    objs = []
    for name in ("node1", "node2", "node3", "node4"):
        n = node(name, roles=("control-plane", "master") if name == "node1" else ())
        n["status"]["nodeInfo"]["kubeletVersion"] = old if name != "node2" else new
        objs.append(n)
    seed(kmock, *objs, pod("web-7d4b9-abcde", "node3"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde")
    loop = asyncio.get_running_loop()
    upgraded: list[tuple[str, bool]] = []

    def upgrade(name: str) -> None:          # the host steps: K3S restarts with the new kubelet
        cordoned = kmock.objects["v1/nodes", None, name]["spec"].get("unschedulable") is True
        upgraded.append((name, cordoned))
        info = {**node(name)["status"]["nodeInfo"], "kubeletVersion": new}
        loop.call_soon_threadsafe(lambda: kmock.objects["v1/nodes", None, name].patch(
            {"status": {"nodeInfo": info}}))

    step = rolling(inv, access_to(kmock, tmp_path, ready_timeout=10, drain_timeout=5))
    listed = nodes_json(node1=old, node2=new, node3=old, node4=old)

    done = await run(acted, step, HostStepsDouble(inv, upgrade), server_facts(out(listed), k3s_yaml()))

    assert upgraded == [("node1", True), ("node3", True), ("node4", True)]
    assert done == "upgraded one at a time: node1, node3, node4"
    assert all("unschedulable" not in kmock.objects["v1/nodes", None, n]["spec"] for n in ("node1", "node3"))
    assert [r.url.path for r in all_evictions(kmock)] == ["/api/v1/namespaces/default/pods/web-7d4b9-abcde/eviction"]
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_failed_upgrade_stops_the_roll_and_says_where(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node3"), node("node4"),
         pod("web-7d4b9-abcde", "node3"))

    def upgrade(name: str) -> None:
        raise StepError(f"{name}: step 'k3s {VERSION} (k3s)': install script exited 1")

    step = rolling(inv, access_to(kmock, tmp_path, ready_timeout=1, drain_timeout=1))
    listed = nodes_json(node1="v1.24.2+k3s1", node3="v1.24.2+k3s1", node4=VERSION)

    with pytest.raises(StepError) as err:
        await run(acted, step, HostStepsDouble(inv, upgrade), server_facts(out(listed), k3s_yaml()))

    assert str(err.value).startswith(f"rolling upgrade stopped: node1 (server): upgrade failed: node1: step 'k3s "
                                     f"{VERSION} (k3s)': install script exited 1; node1 stays cordoned; done: none; "
                                     "not started: node3")
    assert kmock.objects["v1/nodes", None, "node3"]["spec"].get("unschedulable") is None
