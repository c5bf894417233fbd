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


def test_preflight_and_gate_pass_on_a_reachable_host(tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    inv = lab_like_inventory(tmp_path, sshd)
    run = up(inv, [], limit=["node1"], suites=suites)
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
    later = Stage("later", ("server", "agent"), "a stage after preflight", plan=lambda inv: lambda host: [])
    run = up(inv, [later], suites=suites)
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


def test_a_stage_not_built_yet_is_an_explicit_skip(tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    inv = lab_like_inventory(tmp_path, sshd)
    unbuilt = Stage("someday", ("server",), "not there yet", issue=99)
    run = up(inv, [unbuilt], limit=["node1"], suites=suites)
    assert not run.failed
    assert run.outcomes[1].skipped == "not built yet (issue #99)"


def test_a_failing_gate_fails_the_run(tmp_path: Path, sshd: Sshd, suites: Path) -> None:
    (suites / "test_base.py").write_text("def test_never(host):\n    assert host.check_output('echo no') == 'yes'\n")
    inv = lab_like_inventory(tmp_path, sshd)
    run = up(inv, [], limit=["node1"], suites=suites)
    gate = run.outcomes[0].gate
    assert run.failed and gate is not None and not gate.ok
    assert gate.failed == 1 and "test_never" in gate.failures[0]
