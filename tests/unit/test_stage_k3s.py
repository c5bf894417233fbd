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
from picluster.stages import STAGES, k3s
from picluster.state.skip import is_skipped

VERSION = "v1.24.3+k3s1"
@pytest.fixture(autouse=True)
def secrets_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own secrets store and no air-gap bundle from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(k3s.AIRGAP_ENV, raising=False)
    monkeypatch.delenv(k3s.KUBECONFIG_ENV, raising=False)
    return tmp_path / "config"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path, reference_data())


@pytest.fixture
def plan(inv: Inventory, tmp_path: Path) -> k3s.K3sPlan:
    return k3s.plan(inv, kubeconfig=tmp_path / "kube" / "config", progress=False)


# --- plans -------------------------------------------------------------------------------------------


def test_the_catalogue_runs_the_k3s_plan() -> None:
    assert {s.name: s.built for s in STAGES}["k3s"]


def test_the_first_server_also_rolls_and_settles_the_cluster(plan: k3s.K3sPlan, inv: Inventory) -> None:
    server = [s.name for s in plan(inv.hosts["node1"])]
    assert server == ["apt curl", "graceful node shutdown settings", "k3s configuration and token",
                      f"k3s {VERSION} (k3s)", "service k3s", "rolling upgrade plan", "rolling upgrade",
                      "nodes Ready, workers labelled, kubeconfig (check)", "nodes Ready, workers labelled, kubeconfig"]
    agent = [s.name for s in plan(inv.hosts["node2"])]
    assert agent == [*server[:3], f"k3s {VERSION} (k3s-agent)", "service k3s-agent"]


def test_an_airgap_bundle_is_staged_before_the_install(inv: Inventory, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    p = k3s.plan(inv, airgap=bundle, progress=False)
    names = [s.name for s in p(inv.hosts["node2"])]
    assert names.index(f"air-gap bundle staged in {k3s.STAGING}") == names.index(f"k3s {VERSION} (k3s-agent)") - 1


def test_a_bundle_that_is_not_a_directory_fails_every_host_with_why(inv: Inventory, tmp_path: Path) -> None:
    p = k3s.plan(inv, airgap=tmp_path / "nope", progress=False)
    with pytest.raises(ValueError, match=r"air-gap bundle .*nope is not a directory"):
        p(inv.hosts["node1"])


# --- the token -------------------------------------------------------------------------------------------


def test_the_token_is_made_once_0600_and_never_in_a_command_or_diff(inv: Inventory, secrets_home: Path) -> None:
    first = k3s.plan(inv, progress=False)
    path = secrets_home / "picluster" / "secrets" / f"k3s_token_{inv.cluster.name}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == first.token and len(first.token) == 64
    assert k3s.plan(inv, progress=False).token == first.token            # read back, not made again

    batch = first(inv.hosts["node2"])[2]
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
    assert k3s.plan(inv, progress=False).token == "from-env"


# --- rendered files (golden) -------------------------------------------------------------------------------

SERVER_CONFIG = """\
# Managed by picluster (k3s stage) from inventory.yml; changes here are replaced.
# K3S reads this file at start: a change restarts k3s.
token-file: /etc/rancher/k3s/cluster-token
node-name: node1
node-ip: 10.0.0.11
write-kubeconfig-mode: "0644"
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
    assert data["disable"] == ["servicelb"] and data["write-kubeconfig-mode"] == "0644"
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
    assert k3s.logind_delay(inv.hosts["node2"]) == 120


# --- install commands (golden) ---------------------------------------------------------------------------

SERVER_INSTALL = """\
set -e
script=$(mktemp)
trap 'rm -f -- "$script"' EXIT
curl -sfL --retry 3 -o "$script" https://get.k3s.io
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
    assert k3s.install_script(role="server", version=VERSION) == SERVER_INSTALL


def test_agent_airgap_install_waits_for_the_server_then_installs_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    script = k3s.install_script(role="agent", version=VERSION, url="https://10.0.0.11:6443", server="node1",
                                bundle=bundle, arch="arm64")
    assert script == AGENT_AIRGAP_INSTALL.replace("\\\n", "")


def test_install_commands_are_valid_sh(tmp_path: Path) -> None:
    import subprocess

    bundle = make_bundle(tmp_path / "b")
    for script in (SERVER_INSTALL, k3s.install_script(role="agent", version=VERSION, url="https://x:6443",
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
    fetch = out("curl: (6) Could not resolve host: get.k3s.io\n", 6)
    decision = decide(step, install_outputs(None, unit=False, fetch=fetch))
    assert is_skipped(decision)
    assert decision.reason == (
        "skipped: no k3s binary available on node2: k3s is not installed, no air-gap bundle was given "
        "(PICLUSTER_K3S_AIRGAP or --airgap DIR), and https://get.k3s.io is unreachable from it "
        "(curl: (6) Could not resolve host: get.k3s.io)")


def test_a_fresh_agent_installs_and_its_files_need_no_second_restart(inv: Inventory) -> None:
    step = k3s.K3sInstall(inv, inv.hosts["node2"], VERSION, None)
    decision = decide(step, install_outputs(None, unit=False))
    assert isinstance(decision, Change)
    assert decision.diff == (f"install k3s {VERSION} as k3s-agent (agent, arm64, from https://get.k3s.io), "
                             "joining https://10.0.0.11:6443")
    assert decision.commands[0].script == k3s.install_script(role="agent", version=VERSION,
                                                             url="https://10.0.0.11:6443", server="node1")
    assert changed_mark(k3s.CONFIG) in decision.clears


def test_another_version_is_left_to_the_rolling_upgrade_unless_it_is_the_upgrade(inv: Inventory) -> None:
    old = install_outputs("v1.24.2+k3s1")
    left = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None), old)
    assert left == Ok(f"k3s v1.24.2+k3s1 is installed, {VERSION} is pinned: the rolling upgrade run from node1 "
                      "upgrades the nodes one at a time")
    upgrade = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None, upgrade=True), old)
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
    bad = dataclasses.replace(host, vars={**host.vars, "kubelet_shutdown_grace_period_critical_pods": 30})
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


def test_roll_plan_orders_the_stale_nodes_servers_first(inv: Inventory) -> None:
    ctl = k3s.Controller(Path("/nonexistent/kubeconfig"), "https://10.0.0.11:6443", run_id="run1")
    step = k3s.RollPlan(inv, VERSION, ctl)
    assert decide(step, {"nodes": out(ALL_CURRENT)}) == Ok(f"every registered node runs {VERSION}")
    old = "v1.24.2+k3s1"
    decision = decide(step, {"nodes": out(nodes_json(node1=old, node2=VERSION, node3=old, node4=old))})
    assert isinstance(decision, Change)
    assert decision.diff.endswith(f": node1 ({old}), node3 ({old}), node4 ({old})")
    marker = json.loads(base64.b64decode(decision.commands[0].stdin or b""))
    assert marker == {"version": VERSION, "servers": ["node1"], "agents": ["node3", "node4"], "run": "run1"}
    assert k3s.ROLL_PENDING in decision.commands[0].script


def test_limit_narrows_the_rolling_upgrade_to_the_runs_hosts(inv: Inventory) -> None:
    ctl = k3s.Controller(Path("/nonexistent/kubeconfig"), "https://10.0.0.11:6443", run_id="run2")
    old = "v1.24.2+k3s1"
    stale = {"nodes": out(nodes_json(node1=VERSION, node2=old, node3=old, node4=old))}
    decision = decide(k3s.RollPlan(inv, VERSION, ctl, frozenset({"node1", "node3"})), stale)
    assert isinstance(decision, Change)
    assert decision.diff.endswith(f": node3 ({old}); not in --limit, left on their version: node2 ({old}), "
                                  f"node4 ({old})")
    marker = json.loads(base64.b64decode(decision.commands[0].stdin or b""))
    assert (marker["servers"], marker["agents"]) == ([], ["node3"])
    none = decide(k3s.RollPlan(inv, VERSION, ctl, frozenset({"node1"})), stale)
    assert none == Ok(f"no node of this run to upgrade to {VERSION}; not in --limit, left on their version: "
                      f"node2 ({old}), node3 ({old}), node4 ({old})")
    # the stale node itself, in a run that leaves the first server out, says how to upgrade it
    alone = decide(k3s.K3sInstall(inv, inv.hosts["node3"], VERSION, None, selected=frozenset({"node3"})),
                   install_outputs(old))
    assert alone == Ok(f"k3s {old} is installed, {VERSION} is pinned: the rolling upgrade runs from node1, which "
                       "this run leaves out: add node1 to --limit to upgrade node3")


def test_the_runner_tells_a_selective_planner_its_hosts(inv: Inventory, tmp_path: Path) -> None:
    from dataclasses import dataclass

    from picluster.inventory import SshTarget
    from picluster.remote import run_stage

    @dataclass(frozen=True)
    class Loopback:                       # never a reference address: planning fails before any connection
        name: str
        ssh: SshTarget

    plan = k3s.K3sPlan(inv=inv, token="t", version=VERSION, bundle=None,
                       ctl=k3s.Controller(tmp_path / "kubeconfig", "https://10.0.0.11:6443"), error="stop here")
    hosts = [Loopback(n, SshTarget("127.0.0.1", 9, "nobody")) for n in ("node3", "node4")]
    result = run_stage("k3s", hosts, plan, check=False)   # type: ignore[arg-type]
    assert plan.selected == frozenset({"node3", "node4"})
    assert [h.message for h in result.hosts] == ["planning the steps failed: ValueError: stop here"] * 2


def test_no_k3s_on_the_server_skips_the_cluster_steps_with_the_reason(inv: Inventory, tmp_path: Path) -> None:
    stopped = out("", k3s.NOT_RUNNING)
    ctl = k3s.Controller(tmp_path / "kubeconfig", "https://10.0.0.11:6443")
    assert decide(k3s.RollPlan(inv, VERSION, ctl), {"nodes": stopped}).reason == \
        "skipped: k3s is not running on node1: no cluster to upgrade yet"
    decision = decide(k3s.SettlePlan(inv, ctl), {"nodes": stopped, "sha": out("", 1)})
    assert decision.reason == "skipped: k3s is not running on node1: no API to wait on, no kubeconfig to fetch"


def test_settle_plan_says_what_is_missing_and_nothing_once_done(inv: Inventory, tmp_path: Path) -> None:
    ctl = k3s.Controller(tmp_path / "kubeconfig", "https://10.0.0.11:6443")
    step = k3s.SettlePlan(inv, ctl)
    partial = nodes_json(node1=VERSION, node2=VERSION)
    decision = decide(step, {"nodes": out(partial), "sha": out("abc  -\n")})
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        f"fetch /etc/rancher/k3s/k3s.yaml from node1 to {ctl.kubeconfig} (0600), server https://10.0.0.11:6443",
        "wait until Ready: node3, node4",
        "label as workers (kubernetes.io/role=worker, node-role.kubernetes.io/worker=true): node3, node4"]
    ctl.kubeconfig.write_text(k3s.kubeconfig_header("node1", "abc", ctl.api_url) + "apiVersion: v1\n")
    ctl.kubeconfig.chmod(0o600)
    assert decide(step, {"nodes": out(ALL_CURRENT), "sha": out("abc  -\n")}) == \
        Ok(f"4 nodes Ready, workers labelled, {ctl.kubeconfig} is current")


def test_settle_and_roll_act_only_on_a_marker_of_this_run(inv: Inventory, tmp_path: Path) -> None:
    ctl = k3s.Controller(tmp_path / "kubeconfig", "https://10.0.0.11:6443")
    acted: list[str] = []
    earlier = json.dumps({"version": VERSION, "servers": ["node1"], "agents": [], "todo": [], "run": "earlier"})
    for pending in (out("", 1), out(earlier)):     # none, or one a failed earlier run (or a dry run) left
        given = {"pending": pending, "kubeconfig": out(k3s_yaml())}
        assert decide(k3s.Settle(inv, ctl), given) == Ok("nothing pending")
        assert decide(k3s.Roll(inv, ctl, acted.append), given) == Ok("no rolling upgrade pending")
    assert not ctl.kubeconfig.exists() and acted == []


def test_a_running_k3s_whose_api_does_not_answer_yet_is_waited_for(inv: Inventory, tmp_path: Path) -> None:
    ctl = k3s.Controller(tmp_path / "kubeconfig", "https://10.0.0.11:6443")
    decision = decide(k3s.SettlePlan(inv, ctl), {"nodes": out("", 1), "sha": out("abc  -\n")})
    assert isinstance(decision, Change)
    lines = decision.diff.splitlines()
    assert lines[0] == "wait for the API (the API on node1 did not list the nodes (exit code 1))"
    assert lines[1].startswith("fetch /etc/rancher/k3s/k3s.yaml")
    assert lines[2] == "wait until Ready: node1, node2, node3, node4"


# --- the cluster from the first server: against kmock's API over HTTP ------------------------------------------


def k3s_yaml() -> str:
    """/etc/rancher/k3s/k3s.yaml as K3S writes it: the server at 127.0.0.1, which only works on the server."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "default", "user": {"token": TOKEN}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    })


def controller(kmock: km.KubernetesEmulator, tmp_path: Path, **kwargs: Any) -> k3s.Controller:
    return k3s.Controller(tmp_path / "ctl" / "kubeconfig", str(kmock.url).rstrip("/"), poll=0.05, run_id="run1",
                          **kwargs)


PENDING = {"pending": out('{"todo": [], "run": "run1"}\n'), "kubeconfig": out(k3s_yaml())}


@pytest.mark.asyncio
async def test_settle_fetches_the_kubeconfig_waits_ready_and_labels_workers(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node2"), node("node3", ready=False),
         node("node4", labels={"kubernetes.io/role": "worker", "node-role.kubernetes.io/worker": "true"}))
    kmock["list", km.resource("v1/nodes")][2:3] >> (
        lambda: kmock.objects["v1/nodes", None, "node3"].patch(node("node3")))
    ctl = controller(kmock, tmp_path, ready_timeout=10)
    step = k3s.Settle(inv, ctl)

    decision = await run(decide, step, PENDING)

    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        f"kubeconfig written to {ctl.kubeconfig} (0600), server {ctl.api_url}",
        "Ready: node1, node2, node3, node4", "labelled as workers: node2, node3"]
    assert decision.commands[0].script == f"rm -f -- {k3s.SETTLE_PENDING}"
    assert stat.S_IMODE(ctl.kubeconfig.stat().st_mode) == 0o600
    written = ctl.kubeconfig.read_text()
    assert written.startswith(k3s.kubeconfig_header("node1", hashlib.sha256(k3s_yaml().encode()).hexdigest(),
                                                    ctl.api_url))
    assert yaml.safe_load(written)["clusters"][0]["cluster"]["server"] == ctl.api_url
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
    step = k3s.Settle(inv, controller(kmock, tmp_path, ready_timeout=0.3))

    with pytest.raises(StepError) as err:
        await run(decide, step, PENDING)

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
    acted: list[tuple[str, bool]] = []

    def act(name: str) -> None:          # the SSH part: K3S restarts with the new kubelet
        cordoned = kmock.objects["v1/nodes", None, name]["spec"].get("unschedulable") is True
        acted.append((name, cordoned))
        info = {**node(name)["status"]["nodeInfo"], "kubeletVersion": new}
        loop.call_soon_threadsafe(lambda: kmock.objects["v1/nodes", None, name].patch(
            {"status": {"nodeInfo": info}}))

    ctl = controller(kmock, tmp_path, ready_timeout=10, drain_timeout=5)
    plan = json.dumps({"version": new, "servers": ["node1"], "agents": ["node3", "node4"], "run": "run1"})
    step = k3s.Roll(inv, ctl, act)

    decision = await run(decide, step, {"pending": out(plan), "kubeconfig": out(k3s_yaml())})

    assert acted == [("node1", True), ("node3", True), ("node4", True)]
    assert decision == Change("upgraded one at a time: node1, node3, node4",
                              [k3s.Command(f"rm -f -- {k3s.ROLL_PENDING}")])
    assert all("unschedulable" not in kmock.objects["v1/nodes", None, n]["spec"] for n in ("node1", "node3"))
    assert [r.url.path for r in all_evictions(kmock)] == ["/api/v1/namespaces/default/pods/web-7d4b9-abcde/eviction"]
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_failed_upgrade_stops_the_roll_and_says_where(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane", "master")), node("node3"), node("node4"),
         pod("web-7d4b9-abcde", "node3"))

    def act(name: str) -> None:
        raise RuntimeError(f"upgrading k3s on {name} failed: install script exited 1")

    step = k3s.Roll(inv, controller(kmock, tmp_path, ready_timeout=1, drain_timeout=1), act)
    plan = json.dumps({"version": VERSION, "servers": ["node1"], "agents": ["node3"], "run": "run1"})

    with pytest.raises(StepError) as err:
        await run(decide, step, {"pending": out(plan), "kubeconfig": out(k3s_yaml())})

    assert str(err.value).startswith("rolling upgrade stopped: node1 (server): upgrade failed: upgrading k3s on "
                                     "node1 failed: install script exited 1; node1 stays cordoned; done: none; "
                                     "not started: node3")
    assert kmock.objects["v1/nodes", None, "node3"]["spec"].get("unschedulable") is None
