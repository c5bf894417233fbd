"""cluster.up's orchestration against a real sshd on 127.0.0.1: preflight, gates, skips, the report."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from picluster.inventory import Inventory, load_inventory
from picluster.ops.up import up
from picluster.remote import Change, Command, Decision, Ok, StepError
from picluster.remote.phases import ControllerContext, HostPhase, RunOptions, controller_steps
from picluster.stages import Stage

if TYPE_CHECKING:
    from conftest import Sshd

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_like_inventory(tmp_path: Path, sshd: Sshd) -> Inventory:
    """node1 is the real sshd; node2 is a closed port on another loopback address."""
    known_hosts = sshd.known_hosts(tmp_path / "known_hosts")
    data = {
        "cluster": {
            "name": "loop", "domain": "loop.test",
            "lan": {"cidr": "127.0.0.0/24", "gateway": "127.0.0.254", "dhcp_range": ["127.0.0.32", "127.0.0.99"]},
            "metallb_pool": ["127.0.0.100", "127.0.0.200"], "controller": "127.0.0.2",
            "automation_user": sshd.user,
            "admin_users": [{"name": sshd.user, "ssh_key_files": [str(sshd.client_key) + ".pub"]}],
        },
        "vars": {"ssh_key_file": str(sshd.client_key), "ssh_known_hosts": str(known_hosts)},
        "hosts": {
            "node1": {"role": "server", "ip": "127.0.0.1", "mac": "02:00:00:00:00:01", "boot_disk": "/dev/sda",
                      "vars": {"ssh_port": sshd.ports[0]}},
            "node2": {"role": "agent", "ip": "127.0.0.3", "mac": "02:00:00:00:00:02", "boot_disk": "/dev/sda",
                      "vars": {"ssh_port": closed_port()}},
        },
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


@pytest.fixture
def suites(tmp_path: Path) -> Path:
    """A gate suite of our own beside the real conftest: checks that hold on this machine."""
    d = tmp_path / "suites"
    d.mkdir()
    shutil.copy(REPO / "tests/infra/conftest.py", d / "conftest.py")
    (d / "test_base.py").write_text(
        "def test_answers(host):\n    assert host.check_output('echo gate-ran') == 'gate-ran'\n\n"
        "def test_knows_its_inventory_entry(node):\n    assert node.name == 'node1'\n"
    )
    return d


NODE1 = RunOptions(limit=frozenset({"node1"}))


def test_preflight_and_gate_pass_on_a_reachable_host(tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    inv = lab_like_inventory(tmp_path, sshd)
    run = up(inv, [], NODE1, suites=suites)
    assert not run.failed
    (preflight,) = run.outcomes
    assert preflight.result is not None
    (host,) = preflight.result.hosts
    assert host.status == "ok"
    assert host.steps[0].reason.startswith("cloud-init")
    assert preflight.gate is not None and preflight.gate.ok
    assert (preflight.gate.passed, preflight.gate.failed) == (2, 0)


def test_an_unreachable_host_fails_preflight_and_later_stages_say_why(
        tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    inv = lab_like_inventory(tmp_path, sshd)
    later = Stage("later", ("server", "agent"), "a stage after preflight",
                  lambda inv, options: [HostPhase("nothing", lambda host: [])])
    run = up(inv, [later], RunOptions(), suites=suites)
    assert run.failed
    preflight, skipped = run.outcomes
    assert preflight.result is not None
    statuses = {h.host: h.status for h in preflight.result.hosts}
    assert statuses == {"node1": "ok", "node2": "unreachable"}
    assert preflight.gate is None  # no checks on a stage that failed
    assert skipped.result is None and skipped.skipped == "stage preflight failed"
    report = json.loads(json.dumps(run.to_dict(), default=str))
    assert report["failed"] is True
    assert report["stages"][1] == {"stage": "later", "hosts": ["node1", "node2"], "skipped": "stage preflight failed"}


def test_a_failing_gate_fails_the_run(tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    (suites / "test_base.py").write_text("def test_never(host):\n    assert host.check_output('echo no') == 'yes'\n")
    inv = lab_like_inventory(tmp_path, sshd)
    run = up(inv, [], NODE1, suites=suites)
    gate = run.outcomes[0].gate
    assert run.failed and gate is not None and not gate.ok
    assert gate.failed == 1 and "test_never" in gate.failures[0]


# --- phases: host work, then controller work that may act on chosen hosts -----------------------------------


class EchoStep:
    """A host step that changes nothing: it reports what the host printed."""

    def __init__(self, label: str) -> None:
        self.name = label

    def probes(self) -> dict[str, str]:
        return {"said": f"echo {self.name}"}

    def parse(self, outputs: dict[str, object], marks: frozenset[str]) -> str:
        return outputs["said"].stdout.strip()  # type: ignore[attr-defined]

    def decide(self, facts: str) -> Decision:
        return Ok(f"the host said {facts}")


class ReadAndRunOn:
    """A controller step that reads a fact on node1 over SSH, then runs host steps on it in `act`."""

    name = "read, then act on node1"

    def facts(self, ctx: ControllerContext) -> str:
        return ctx.read(ctx.host("node1"), {"me": "echo $((6 * 7))"})["me"].stdout.strip()

    def decide(self, facts: str) -> Decision:
        return Change(f"node1 computed {facts}", [])

    def act(self, ctx: ControllerContext, change: Change) -> str:
        ctx.run_on(ctx.host("node1"), lambda host: [EchoStep("from-the-controller")])
        return change.diff + ", then ran a step on it"


class Refuses:
    name = "refuses"

    def facts(self, ctx: ControllerContext) -> None:
        return None

    def decide(self, facts: None) -> Decision:
        return Change("would do it", [Command("false")])

    def act(self, ctx: ControllerContext, change: Change) -> str:
        raise StepError("the API said no")


def phased(*controller: object) -> Stage:
    return Stage("phased", ("server", "agent"), "host, then controller",
                 lambda inv, options: [HostPhase("hosts", lambda host: [EchoStep("hello")]),
                                       controller_steps("controller", *controller)])  # type: ignore[arg-type]


def test_a_controller_phase_reads_hosts_acts_and_its_host_steps_join_the_hosts_row(
        tmp_path: Path, sshd: Sshd) -> None:
    from picluster.ops.up import run_stage_with_gate

    inv = lab_like_inventory(tmp_path, sshd)
    outcome = run_stage_with_gate(inv, phased(ReadAndRunOn()), inv.select(limit=["node1"]), NODE1, gate=False)
    assert outcome.result is not None and not outcome.failed
    rows = {h.host: h for h in outcome.result.hosts}
    assert list(rows) == ["node1", "controller"] == outcome.hosts
    assert [(s.name, s.reason) for s in rows["node1"].steps] == [
        ("hello", "the host said hello"), ("from-the-controller", "the host said from-the-controller")]
    (step,) = rows["controller"].steps
    assert (step.status, step.diff) == ("changed", "node1 computed 42, then ran a step on it")


def test_a_dry_run_decides_but_does_not_act(tmp_path: Path, sshd: Sshd) -> None:
    from picluster.ops.up import run_stage_with_gate

    inv = lab_like_inventory(tmp_path, sshd)
    options = RunOptions(limit=frozenset({"node1"}), dry_run=True)
    outcome = run_stage_with_gate(inv, phased(ReadAndRunOn(), Refuses()), inv.select(limit=["node1"]), options)
    assert outcome.result is not None and not outcome.failed
    rows = {h.host: h for h in outcome.result.hosts}
    assert [s.name for s in rows["node1"].steps] == ["hello"]          # act did not run its host step
    assert [(s.status, s.diff) for s in rows["controller"].steps] == [
        ("changed", "node1 computed 42"), ("changed", "would do it")]


def test_a_failed_controller_step_fails_the_stage_with_its_reason(tmp_path: Path, sshd: Sshd) -> None:
    from picluster.ops.up import run_stage_with_gate

    inv = lab_like_inventory(tmp_path, sshd)
    outcome = run_stage_with_gate(inv, phased(Refuses(), ReadAndRunOn()), inv.select(limit=["node1"]), NODE1,
                                  gate=False)
    assert outcome.failed and outcome.result is not None
    controller = outcome.result.hosts[-1]
    assert controller.status == "failed"
    assert [(s.name, s.message) for s in controller.steps] == [("refuses", "the API said no")]   # the next never ran


def test_no_controller_work_after_a_host_failed(tmp_path: Path, sshd: Sshd) -> None:
    from picluster.ops.up import run_stage_with_gate

    inv = lab_like_inventory(tmp_path, sshd)
    outcome = run_stage_with_gate(inv, phased(ReadAndRunOn()), inv.select(), RunOptions(), gate=False)
    assert outcome.failed and outcome.result is not None
    assert {h.host: h.status for h in outcome.result.hosts} == {"node1": "ok", "node2": "unreachable"}
