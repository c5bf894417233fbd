"""k3s.stop/start, cluster.reset and node.remove: the steps' decisions, the cleaning run for real on local files,
the phases' order, and the Kubernetes parts (wait Ready, take a node out) against kmock over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kmock as km
import pytest
from conftest import LocalShell
from kube_support import allow_eviction, node, pod, run, seed, server_faults, write_kubeconfig
from stage_support import decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.ops.k3s_service import STOP, WaitReady, start_stage
from picluster.ops.nodes import PowerOff, TakeOut, forget_stage, remove_stage
from picluster.ops.reset import reset_plan, reset_stage, what_it_does
from picluster.remote import Change, Ok, StepError
from picluster.remote.phases import ControllerContext, ControllerPhase, HostPhase, ResultTable, RunOptions
from picluster.remote.results import HostResult, StepResult
from picluster.state.cleanup import FolderEmptied, IscsiDiscoveryCleaned, PathsAbsent, Portal
from picluster.state.k3s_service import KILLALL, NOT_INSTALLED, K3sStarted, K3sStopped, K3sUninstalled
from picluster.state.skip import is_skipped


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path, reference_data())


def k3s(installed: bool = True, active: str = "active", shims: str = "0", killall: bool = True) -> dict[str, Any]:
    return {"installed": out("", 0 if installed else 1), "active": out(active + "\n", 0 if active == "active" else 3),
            "shims": out(shims + "\n"), "killall": out("", 0 if killall else 1)}


def test_stop_is_the_service_stop_then_the_killall_script_and_nothing_once_stopped() -> None:
    step = K3sStopped("k3s-agent")
    change = decide(step, k3s())
    assert isinstance(change, Change)
    assert [c.script for c in change.commands] == ["systemctl stop -- k3s-agent", KILLALL]
    leftovers = decide(step, k3s(active="inactive", shims="3"))
    assert [c.script for c in leftovers.commands] == [KILLALL] and "3 container shims" in leftovers.diff
    assert decide(step, k3s(active="inactive")) == Ok("k3s-agent is inactive and no container runs")
    assert is_skipped(decide(step, k3s(installed=False))) and NOT_INSTALLED in decide(step, k3s(installed=False)).reason


def test_start_starts_an_installed_unit_and_checks_it_stayed_up() -> None:
    step = K3sStarted("k3s")
    change = decide(step, k3s(active="inactive"))
    assert isinstance(change, Change) and "systemctl is-active --quiet -- k3s" in change.commands[0].script
    assert decide(step, k3s()) == Ok("k3s is active")
    assert is_skipped(decide(step, k3s(installed=False)))


def test_agents_stop_before_servers_and_servers_start_before_agents_then_the_wait(inv: Inventory) -> None:
    agent, server = inv.hosts["node2"], inv.hosts["node1"]
    stop = STOP.phases(inv, RunOptions())
    assert [p.name for p in stop] == ["stop agents", "stop servers"]
    assert [(p.applies(agent), p.applies(server)) for p in stop if isinstance(p, HostPhase)] == [(True, False),
                                                                                                 (False, True)]
    assert [s.name for s in stop[0].plan(agent)] == ["stop k3s-agent"]
    start = start_stage().phases(inv, RunOptions())
    assert [p.name for p in start] == ["start servers", "start agents", "wait Ready"]
    assert isinstance(start[2], ControllerPhase) and STOP.gate == "base" and start_stage().gate == "k3s"


def context(inv: Inventory, rows: dict[str, list[StepResult]] | None = None) -> ControllerContext:
    table = ResultTable([])
    for name, steps in (rows or {}).items():
        table.add(HostResult(name, "ok", 0.0, steps))
    return ControllerContext(RunOptions(), inv.select(roles=["server", "agent"]), table)


def test_the_wait_is_an_explicit_skip_without_a_kubeconfig_or_without_k3s(inv: Inventory, tmp_path: Path) -> None:
    step = WaitReady(tmp_path / "kubeconfig")
    decision = step.decide(step.facts(context(inv)))
    assert is_skipped(decision) and f"no kubeconfig at {tmp_path / 'kubeconfig'}" in decision.reason
    none = {n: [StepResult("start k3s", "skipped", 0.0, reason="skipped: " + NOT_INSTALLED)]
            for n in ("node1", "node2", "node3", "node4")}
    decision = step.decide(step.facts(context(inv, none)))
    assert is_skipped(decision) and "no node of this run has K3S installed" in decision.reason


@pytest.mark.asyncio
async def test_the_wait_ready_goes_through_the_api_and_is_bounded(kmock: km.KubernetesEmulator, inv: Inventory,
                                                                  tmp_path: Path) -> None:
    seed(kmock, node("node1"), node("node2"), node("node3"), node("node4", ready=False))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    ctx = context(inv)
    step = WaitReady(kubeconfig, timeout=0.5, poll=0.05)
    change = step.decide(step.facts(ctx))
    assert isinstance(change, Change)
    started = time.monotonic()
    with pytest.raises(StepError, match="node4"):
        await run(step.act, ctx, change)
    assert time.monotonic() - started < 5
    kmock.objects["v1/nodes", None, "node4"].patch(node("node4"))
    assert await run(step.act, ctx, change) == "Ready: node1, node2, node3, node4"
    assert server_faults(kmock) == []


def test_the_uninstall_uses_the_official_script_of_the_role_and_nothing_when_gone() -> None:
    step = K3sUninstalled()
    agent = decide(step, {"server": out("", 1), "agent": out(), "binary": out()})
    assert [c.script for c in agent.commands] == ["/usr/local/bin/k3s-agent-uninstall.sh"]
    server = decide(step, {"server": out(), "agent": out(), "binary": out()})
    assert [c.script for c in server.commands] == ["/usr/local/bin/k3s-uninstall.sh"]
    assert decide(step, {"server": out("", 1), "agent": out("", 1), "binary": out("", 1)}) == Ok(
        "k3s is not installed")


def test_the_cleaning_removes_what_is_there_for_real_and_then_nothing(local: LocalShell, tmp_path: Path) -> None:
    logs = tmp_path / "log"
    for p in ("pods/ns_p_1/c/0.log", "containers/p.log", "fluentbit/flb.db", "a.pos", "td/b.pos", "keep.log"):
        (logs / p).parent.mkdir(parents=True, exist_ok=True)
        (logs / p).write_text("x")
    storage = tmp_path / "storage"
    (storage / "lost+found").mkdir(parents=True)
    (storage / "longhorn").mkdir()
    (storage / "longhorn" / "replica.img").write_text("data")
    (storage / ".hidden").write_text("x")
    steps = [PathsAbsent("logs", [str(logs / "pods"), str(logs / "containers"), str(logs / "fluentbit")],
                         under=str(logs), pattern="*.pos"), FolderEmptied(str(storage))]
    first = local.apply(steps)
    assert [r.status for r in first] == ["changed", "changed"], first
    assert sorted(p.name for p in logs.rglob("*")) == ["keep.log", "td"]
    assert sorted(p.name for p in storage.iterdir()) == ["lost+found"]
    assert [r.status for r in local.apply(steps)] == ["ok", "ok"]


def test_refusing_to_empty_the_root_and_iscsi_records_but_the_gateways() -> None:
    with pytest.raises(ValueError, match="refusing to empty /"):
        FolderEmptied("/")
    step = IscsiDiscoveryCleaned(["10.0.0.1"])
    records = out("10.0.0.1:3260 via sendtargets\n10.0.0.99:3260 via sendtargets\n")
    change = decide(step, {"records": records})
    assert [c.script for c in change.commands] == ["iscsiadm -m discovery -p 10.0.0.99:3260 -o delete"]
    assert decide(step, {"records": out("", 3)}) == Ok("iscsiadm is not installed: no discovery records")
    assert step.parse({"records": records}, frozenset())[0] == Portal("10.0.0.1:3260", "sendtargets")


def test_reset_wipes_storage_only_when_asked_and_only_on_agents(inv: Inventory) -> None:
    plain = [s.name for s in reset_plan(inv, wipe_storage=False).plan(inv.hosts["node2"])]
    assert plain == ["uninstall k3s", "pod logs and fluent-bit state", "iscsi discovery records"]
    wiped = [s.name for s in reset_plan(inv, wipe_storage=True).plan(inv.hosts["node2"])]
    assert wiped[-1] == "empty /storage"
    assert [s.name for s in reset_plan(inv, wipe_storage=True).plan(inv.hosts["node1"])] == plain[:2]
    assert reset_stage(wipe_storage=True).roles == ("server", "agent")
    lines = what_it_does([inv.hosts["node1"], inv.hosts["node2"]], wipe_storage=True)
    assert lines[0].startswith("node1 (server): uninstall K3S") and "/storage" not in lines[0]
    assert lines[1].endswith("DELETE EVERYTHING UNDER /storage")


# --- node.remove --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_take_out_cordons_drains_with_the_pdb_and_deletes_the_node(kmock: km.KubernetesEmulator,
                                                                         inv: Inventory, tmp_path: Path) -> None:
    seed(kmock, node("node1"), node("node4"), pod("web-7d4b9-abcde", "node4"))
    allow_eviction(kmock, "default", "web-7d4b9-abcde", refuse=1)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    step = TakeOut("node4", kubeconfig, drain_timeout=10, poll=0.05)
    ctx = context(inv)
    change = await run(lambda: step.decide(step.facts(ctx)))
    assert isinstance(change, Change) and change.diff == "cordon, drain (eviction API), delete the Node node4"
    assert await run(step.act, ctx, change) == "cordoned, drained and deleted the Node node4"
    from picluster.kube import Kube
    from picluster.kube.nodes import list_nodes

    assert [n.name for n in await run(list_nodes, Kube(kubeconfig))] == ["node1"]
    assert await run(lambda: step.decide(step.facts(ctx))) == Ok("the API has no Node node4")
    assert server_faults(kmock) == []


def test_without_an_api_the_take_out_is_a_named_skip_and_the_host_part_still_runs(inv: Inventory,
                                                                                  tmp_path: Path) -> None:
    step = TakeOut("node4", tmp_path / "none")
    decision = step.decide(step.facts(context(inv)))
    assert is_skipped(decision) and "node4 is not cordoned, drained or deleted from the API" in decision.reason
    stage = remove_stage(inv, "node4", power_off=True)
    phases = stage.phases(inv, RunOptions())
    host = next(p for p in phases if isinstance(p, HostPhase))
    assert [s.name for s in host.plan(inv.hosts["node4"])] == ["uninstall k3s", "pod logs and fluent-bit state",
                                                                "power off"]
    assert stage.gate is None and remove_stage(inv, "node4", power_off=False).gate == "os"
    assert "systemctl poweroff" in PowerOff().decide(None).commands[0].script


def test_a_host_no_longer_listed_is_forgotten_through_the_gateway_stage(inv: Inventory) -> None:
    stage = forget_stage("node9")
    names = [p.name for p in stage.phases(inv, RunOptions())]
    assert names == ["forget the Node", "gateway"] and stage.roles == ("gateway",) and stage.gate == "gateway"


def test_node_add_runs_the_gateway_stage_then_the_hosts_own_stages_and_stops_at_a_failure(
        inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    from picluster.ops import nodes
    from picluster.ops.up import StageOutcome
    from picluster.remote.results import StageResult

    ran: list[tuple[str, list[str]]] = []

    def fake(inv: Inventory, stage: Any, hosts: Any, options: Any, watch: Any = None) -> StageOutcome:
        ran.append((stage.name, [h.name for h in hosts]))
        failed = HostResult(hosts[0].name, "failed", 0.0, [], "boom") if stage.name == "k3s" else None
        result = StageResult(stage.name, False, 0.0, [failed] if failed else [])
        return StageOutcome(stage, [h.name for h in hosts], result=result)

    monkeypatch.setattr(nodes, "run_stage_with_gate", fake)
    outcomes = nodes.add_node(inv, "node4", RunOptions())
    assert ran == [("gateway", ["gateway"]), ("preflight", ["node4"]), ("os", ["node4"]), ("k3s", ["node4"])]
    assert [(o.stage.name, o.skipped) for o in outcomes[4:]] == [("apps", "stage k3s failed"),
                                                                 ("node-ready", "stage k3s failed")]
