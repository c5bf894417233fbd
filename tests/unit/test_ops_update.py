"""cluster.update: apt's simulation parsed, the steps' decisions, the order, and the roll through kmock's API."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import kmock as km
import pytest
from kube_support import all_evictions, allow_eviction, node, pod, run, seed, server_faults, write_kubeconfig
from stage_support import decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.ops.timeline import Timeline
from picluster.ops.update import AptDownload, Pending, RollingUpdate, UpdateFacts, UpdatePlan
from picluster.remote import APT_UPDATED, Change, Ok, StepError
from picluster.remote.phases import ControllerContext, ResultTable, RunOptions
from picluster.remote.reboot import rebooting_from
from picluster.remote.results import HostResult, StepResult
from picluster.state.upgrade import SIMULATE, AptUpgrade, RebootIfRequired, Upgrade, parse_simulation

# What `apt-get -s dist-upgrade` prints on Debian 12 (trimmed): upgrades, a new dependency, a removal.
SIMULATION = """NOTE: This is only a simulation!
Reading package lists...
The following packages have been kept back:
  picluster-held
The following packages will be upgraded:
  base-files bash
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst libnew1 (1.2-1 Debian:12.15/oldstable [amd64])
Remv oldlib2 [0.9-3]
Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64]) []
Conf bash (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
"""


def test_the_simulation_is_read_as_upgrades_new_packages_and_removals() -> None:
    assert parse_simulation(SIMULATION) == [
        Upgrade("base-files", "12.4+deb12u11", "12.4+deb12u15"), Upgrade("libnew1", "", "1.2-1"),
        Upgrade("oldlib2", "0.9-3", ""), Upgrade("bash", "5.2.15-2+b8", "5.2.15-2+b13")]
    assert [u.line() for u in parse_simulation(SIMULATION)[:3]] == [
        "~ base-files 12.4+deb12u11 -> 12.4+deb12u15", "+ libnew1 1.2-1", "- oldlib2 0.9-3"]


def test_the_simulation_script_is_valid_sh_and_never_touches_the_hosts_lists() -> None:
    assert subprocess.run(["sh", "-n", "-c", SIMULATE], capture_output=True).returncode == 0
    assert "Dir::State::Lists=\"$d\" update" in SIMULATE and "-s -o Dir::State::Lists" in SIMULATE
    assert "trap 'rm -rf \"$d\"' EXIT" in SIMULATE


def test_an_upgrade_keeps_holds_and_updates_once() -> None:
    step = AptUpgrade()
    held = out("picluster-held\n")
    assert decide(step, {"sim": out("Reading package lists...\n"), "held": held}) == Ok(
        "every package is up to date (held, left as they are: picluster-held)")
    change = decide(step, {"sim": out(SIMULATION), "held": held})
    assert isinstance(change, Change)
    assert [c.script.split()[-1] for c in change.commands] == ["update", "dist-upgrade"]
    assert "--allow-change-held-packages" not in " ".join(c.script for c in change.commands)
    assert change.diff.splitlines()[-1] == "held, left as they are: picluster-held"
    again = decide(step, {"sim": out(SIMULATION), "held": out("")}, frozenset({APT_UPDATED}))
    assert [c.script.split()[-1] for c in again.commands] == ["dist-upgrade"]


def test_an_archive_that_cannot_be_read_fails_with_aptss_words() -> None:
    with pytest.raises(StepError, match="apt-get update failed: E: Failed to fetch http://deb"):
        decide(AptUpgrade(), {"sim": out("E: Failed to fetch http://deb.debian.org/x 404", 4), "held": out("")})


def test_a_reboot_only_when_the_host_asks() -> None:
    step = RebootIfRequired()
    assert decide(step, {"required": out("", 1), "pkgs": out(""), "boot_id": out("b1")}) == Ok(
        "no /var/run/reboot-required: no reboot needed")
    change = decide(step, {"required": out(), "pkgs": out("linux-image\nlinux-image\n"), "boot_id": out("b1")})
    assert isinstance(change, Change) and rebooting_from(change.sets) == "b1"
    assert change.diff.startswith("reboot (asked by linux-image)")


def test_the_download_fetches_only_what_would_be_installed() -> None:
    change = decide(AptDownload(), {"sim": out(SIMULATION), "held": out("")})
    assert isinstance(change, Change) and change.diff == "download 3 packages: base-files, libnew1, bash"
    assert change.commands[-1].script.endswith("--download-only dist-upgrade")
    assert isinstance(decide(AptDownload(), {"sim": out(""), "held": out("")}), Ok)


# --- the order and the roll ----------------------------------------------------------------------------


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path, reference_data())


def pending(name: str, role: str, n: int = 1, reboot: bool = False) -> Pending:
    return Pending(name, role, tuple(Upgrade(f"p{i}", "1", "2") for i in range(n)), reboot)


def test_the_gateway_goes_first_then_servers_then_agents_and_idle_hosts_are_left(inv: Inventory,
                                                                                 tmp_path: Path) -> None:
    step = RollingUpdate(inv, tmp_path / "none", Timeline())
    facts = UpdateFacts((pending("gateway", "gateway"), pending("node1", "server", 0, reboot=True),
                         pending("node2", "agent", 0), pending("node3", "agent", 2)), "no kubeconfig at /x")
    plan = step.decide(facts)
    assert isinstance(plan, UpdatePlan)
    assert (plan.gateways, plan.servers, plan.agents) == (("gateway",), ("node1",), ("node3",))
    assert plan.diff.splitlines() == [
        "gateway: 1 packages (~ p0 1 -> 2)", "node1: no package, and /var/run/reboot-required asks for a reboot",
        "node3: 2 packages (~ p0 1 -> 2; ~ p1 1 -> 2)",
        "order: gateway -> node1 -> node3 (the gateway alone, then one K3S node at a time)",
        "cordon, drain, wait Ready and uncordon skipped: no kubeconfig at /x"]
    assert step.decide(UpdateFacts((pending("node2", "agent", 0),), "")) == Ok("every host is up to date: node2")


class Hosts(ControllerContext):
    """The runner's context with `run_on` answered by `on_host(name)` instead of SSH."""

    def __init__(self, inv: Inventory, on_host: Any) -> None:
        super().__init__(RunOptions(), inv.select(), ResultTable([]))
        self.on_host = on_host
        self.reads: list[str] = []

    def run_on(self, host: Any, plan: Any) -> HostResult:
        return self.on_host(host.name)

    def read(self, host: Any, probes: Any) -> dict[str, Any]:
        self.reads.append(host.name)
        return {}


def upgraded(name: str, rebooted: bool) -> HostResult:
    steps = [StepResult("apt dist-upgrade", "changed", 1.0)]
    if rebooted:
        steps += [StepResult("reboot if the host requires it", "changed", 0.1),
                  StepResult("wait for the reboot", "ok", 7.0)]
    return HostResult(name, "changed", 2.0, steps)


@pytest.mark.asyncio
async def test_nodes_roll_one_at_a_time_through_the_api_pdb_honoured_reboots_waited(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"), node("node3"),
         pod("web-7d4b9-abcde", "node2"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde", refuse=2)      # the PDB says no twice, then yes
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    timeline = Timeline()
    seen: list[tuple[str, list[str]]] = []

    def on_host(name: str) -> HostResult:
        cordoned = [n for n in ("node1", "node2", "node3")
                    if kmock.objects["v1/nodes", None, n]["spec"].get("unschedulable")]
        seen.append((name, cordoned))
        if name == "node2":     # it reboots: a new boot id, and Ready only after a moment
            kmock.objects["v1/nodes", None, name].patch({"status": {"nodeInfo": {"bootID": "new"}}})
        return upgraded(name, rebooted=name in ("gateway", "node2"))

    step = RollingUpdate(inv, kubeconfig, timeline, ready_timeout=5, drain_timeout=10, poll=0.05)
    plan = UpdatePlan("", [], gateways=("gateway",), servers=("node1",), agents=("node2", "node3"))
    ctx = Hosts(inv, on_host)
    done = await run(step.act, ctx, plan)

    assert done == "updated one at a time: gateway, node1, node2, node3"
    assert seen == [("gateway", []), ("node1", ["node1"]), ("node2", ["node2"]), ("node3", ["node3"])]
    assert ctx.reads == ["gateway"]                  # the outage announced on the gateway itself
    assert not any(kmock.objects["v1/nodes", None, n]["spec"].get("unschedulable") for n in ("node1", "node2"))
    assert len(all_evictions(kmock)) == 3
    events = [(e.host, e.what) for e in timeline.events]
    assert events[:2] == [("gateway", "outage announced"), ("gateway", "outage over")]
    assert events[2:7] == [("node1", "cordon"), ("node1", "drain"), ("node1", "upgrade"), ("node1", "upgraded"),
                           ("node1", "wait_ready")]
    assert [e.detail for e in timeline.events if e.what in ("upgraded", "outage over")] == [
        "rebooted, back after 7s", "no reboot required", "rebooted, back after 7s", "no reboot required"]
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_rebooted_node_is_waited_for_with_a_new_boot_id_and_the_wait_is_bounded(
        kmock: km.KubernetesEmulator, inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"), node("node3"), pod("dns-1", "node4"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    timeline = Timeline()
    step = RollingUpdate(inv, kubeconfig, timeline, ready_timeout=0.5, poll=0.05)
    plan = UpdatePlan("", [], agents=("node2", "node3"))
    started = time.monotonic()
    with pytest.raises(StepError) as err:     # node2 says it rebooted, but the API still has the old boot id
        await run(step.act, Hosts(inv, lambda name: upgraded(name, rebooted=True)), plan)
    assert time.monotonic() - started < 5
    assert "node2 (agent): wait ready failed" in str(err.value) and "same boot ID" in str(err.value)
    assert "node2 stays cordoned" in str(err.value) and "not started: node3" in str(err.value)
    assert kmock.objects["v1/nodes", None, "node2"]["spec"]["unschedulable"] is True
    assert "unschedulable" not in kmock.objects["v1/nodes", None, "node3"]["spec"]


@pytest.mark.asyncio
async def test_a_failed_upgrade_stops_the_roll_and_names_the_node(kmock: km.KubernetesEmulator, inv: Inventory,
                                                                  tmp_path: Path) -> None:
    seed(kmock, node("node1", roles=("control-plane",)), node("node2"), node("node3"), pod("dns-1", "node4"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))

    def on_host(name: str) -> HostResult:
        if name == "node2":
            raise StepError("node2: step 'apt dist-upgrade': dpkg was interrupted")
        return upgraded(name, rebooted=False)

    step = RollingUpdate(inv, kubeconfig, Timeline(), ready_timeout=5, poll=0.05)
    with pytest.raises(StepError, match=r"node2 \(agent\): upgrade failed: node2: step 'apt dist-upgrade': dpkg"):
        await run(step.act, Hosts(inv, on_host), UpdatePlan("", [], servers=("node1",), agents=("node2", "node3")))
    assert "unschedulable" not in kmock.objects["v1/nodes", None, "node1"]["spec"]


def test_without_an_api_the_nodes_are_still_updated_one_at_a_time_and_the_skips_named(inv: Inventory,
                                                                                     tmp_path: Path) -> None:
    timeline = Timeline()
    order: list[str] = []
    step = RollingUpdate(inv, tmp_path / "missing", timeline)
    note = step.kube_note(["node1"])
    assert note == f"no kubeconfig at {tmp_path / 'missing'} (the k3s stage fetches it)"
    plan = UpdatePlan("", [], servers=("node1",), agents=("node2",), kube_note=note)
    done = step.act(Hosts(inv, lambda n: order.append(n) or upgraded(n, False)), plan)
    assert done == "updated one at a time: node1, node2" and order == ["node1", "node2"]
    assert ("node1", "cordon skipped", note) in [(e.host, e.what, e.detail) for e in timeline.events]
