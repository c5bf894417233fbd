"""The runner against a real sshd on 127.0.0.1: aggregation, host keys, ssh_config, end-to-end apply."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fabric import Config

from picluster.inventory import SshTarget
from picluster.remote import (
    AnyStep,
    Change,
    Command,
    HostRun,
    ProbeOutput,
    StageFailed,
    StageResult,
    connect,
    run_stage,
    run_steps,
)
from picluster.remote.execute import Executor, split_probes, wrap
from picluster.state import CmdlineArgs, Directory, File, KernelModule, Line, Sysctl

if TYPE_CHECKING:
    from conftest import FakeTools, LocalShell, Sshd


@dataclass(frozen=True)
class Node:
    """The smallest host the runner accepts: a name and how to reach it."""

    name: str
    ssh: SshTarget


def test_wrap_runs_scripts_with_sh_and_sudo_n_for_non_root() -> None:
    assert wrap("echo 'a b'", sudo=False) == "sh -c 'echo '\"'\"'a b'\"'\"''"
    assert wrap("true", sudo=True) == "sudo -n sh -c true"
    assert wrap("true", sudo=True, timeout=1.5) == "sudo -n timeout -k 5 1.5 sh -c true"


def test_probes_come_back_exact_in_one_round_trip(local: LocalShell) -> None:
    probes = {
        "no-newline": "printf 'x y'",
        "two-lines": "printf 'a\\nb\\n'",
        "fails": "echo partial; exit 3",
        "looks-like-a-marker": "printf '\\n@picluster-0 0\\n'",
        "stderr-dropped": "echo oops >&2",
    }
    out = Executor(local.context, sudo=False).read(probes)
    assert out == {
        "no-newline": ProbeOutput("x y", 0),
        "two-lines": ProbeOutput("a\nb\n", 0),
        "fails": ProbeOutput("partial\n", 3),
        "looks-like-a-marker": ProbeOutput("\n@picluster-0 0\n", 0),
        "stderr-dropped": ProbeOutput("", 0),
    }


def test_malformed_probe_output_is_detected() -> None:
    assert split_probes("garbage", ["a"], "@n") is None
    assert split_probes("x\n@n 0\n", ["a"], "@n") == {"a": ProbeOutput("x", 0)}


def _nodes(sshd: Sshd, known_hosts: Path) -> list[Node]:
    closed = sshd.closed_port()
    return [
        Node("good", sshd.target(sshd.ports[0], known_hosts)),
        Node("bad", sshd.target(sshd.ports[1], known_hosts)),
        Node("gone", sshd.target(closed, known_hosts)),
    ]


def test_stage_collects_every_host_and_fails_once_at_the_end(sshd: Sshd, tmp_path: Path) -> None:
    nodes = _nodes(sshd, sshd.known_hosts(tmp_path / "known_hosts"))
    target = tmp_path / "out"
    (tmp_path / "a-file").write_text("")

    def plan(node: Node) -> Sequence[AnyStep]:
        if node.name == "bad":
            blocked = tmp_path / "a-file" / "f"  # its parent is a file: no directory can be made there
            return [File(str(blocked), "x\n", owner=None, group=None), Directory(str(tmp_path / "never"))]
        return [Directory(str(target)), File(str(target / "f"), "hello\n")]

    with pytest.raises(StageFailed) as raised:
        run_stage("demo", nodes, plan, timeout=5)
    result = raised.value.result
    by_name = {h.host: h for h in result.hosts}
    assert [h.host for h in result.hosts] == ["good", "bad", "gone"]
    assert by_name["good"].status == "changed"
    assert (target / "f").read_text() == "hello\n"
    assert by_name["bad"].status == "failed"
    assert [s.status for s in by_name["bad"].steps] == ["failed"]  # the next step never ran
    assert not (tmp_path / "never").exists()
    assert by_name["gone"].status == "unreachable"
    assert all(h.duration > 0 for h in result.hosts)

    message = str(raised.value)
    assert "stage 'demo' failed on 2 of 3 hosts" in message
    assert f"bad: step 'file {tmp_path}/a-file/f' failed" in message
    assert "command: set -e" in message and "exit code: 1" in message
    assert "File exists" in message
    assert f"gone: unreachable: gone: cannot reach 127.0.0.1:{nodes[2].ssh.port}" in message
    assert "What to do" in message and "--limit bad,gone" in message
    assert json.loads(json.dumps(result.to_dict()))["hosts"][1]["steps"][0]["error"]["exit_code"] == 1


def test_second_run_reports_zero_changes_and_dry_run_changes_nothing(sshd: Sshd, tmp_path: Path) -> None:
    known = sshd.known_hosts(tmp_path / "known_hosts")
    nodes = [Node("a", sshd.target(sshd.ports[0], known)), Node("b", sshd.target(sshd.ports[1], known))]
    module = next(m for m in sorted(os.listdir("/sys/module")) if m.isidentifier())
    ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    for name in ("a", "b"):
        (tmp_path / f"cmdline-{name}.txt").write_text("console=tty1 root=PARTUUID=1-02 rootwait\n")

    def plan(node: Node) -> Sequence[AnyStep]:
        d = tmp_path / node.name / "conf d"
        return [
            Directory(str(d), mode=0o750),
            File(str(d / "token"), "s3cr3t $(reboot) `id`\n", mode=0o600, secret=True),
            Line(str(d / "sshd_config"), "PasswordAuthentication no", regex=r"^#?PasswordAuthentication"),
            Sysctl("net.ipv4.ip_forward", ip_forward, file=str(d / "99-test.conf")),
            KernelModule(module, file=str(d / "modules.conf")),
            CmdlineArgs(["cgroup_memory=1", "cgroup_enable=memory"], path=str(tmp_path / f"cmdline-{node.name}.txt")),
        ]

    dry = run_stage("e2e", nodes, plan, dry_run=True)
    assert dry.dry_run and dry.changed == 2 * 6 and not (tmp_path / "a").exists()
    first = run_stage("e2e", nodes, plan)
    assert [h.status for h in first.hosts] == ["changed", "changed"]
    assert first.hosts[0].needs_reboot and first.hosts[1].needs_reboot
    token = tmp_path / "a" / "conf d" / "token"
    assert token.read_text() == "s3cr3t $(reboot) `id`\n" and token.stat().st_mode & 0o777 == 0o600
    assert "s3cr3t" not in json.dumps(first.to_dict())
    assert (tmp_path / "cmdline-b.txt").read_text() == (
        "console=tty1 root=PARTUUID=1-02 rootwait cgroup_memory=1 cgroup_enable=memory\n"
    )
    second = run_stage("e2e", nodes, plan)
    assert second.changed == 0, [s for h in second.hosts for s in h.steps if s.status != "ok"]
    reasons = [s.reason for s in second.hosts[0].steps]
    assert f"sysctl net.ipv4.ip_forward is {ip_forward} (runtime and {tmp_path}/a/conf d/99-test.conf)" in reasons
    assert not second.hosts[0].needs_reboot


def test_a_changed_host_key_is_refused_naming_host_and_file(sshd: Sshd, tmp_path: Path) -> None:
    other = sshd.other_key(tmp_path / "other_host_key")
    known = sshd.known_hosts(tmp_path / "known_hosts", other)
    result = run_stage("keys", [Node("node1", sshd.target(sshd.ports[0], known))], lambda n: [], check=False)
    (host,) = result.hosts
    assert host.status == "unreachable"
    assert host.message.startswith("node1: the host key of 127.0.0.1 CHANGED")
    assert str(known) in host.message and "refusing to connect" in host.message
    assert known.read_text().count("\n") == 2  # untouched


def test_an_unknown_host_key_is_refused_unless_first_contact(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    target = sshd.target(sshd.ports[1], known)
    result = run_stage("keys", [Node("node2", target)], lambda n: [], check=False)
    assert result.hosts[0].status == "unreachable"
    assert f"is not in {known}" in result.hosts[0].message
    assert not known.exists()

    first = run_stage("keys", [Node("node2", target)], lambda n: [], first_contact=True)
    assert first.hosts[0].status == "ok"
    key = " ".join(sshd.host_key_line.split()[:2])
    assert known.read_text() == f"[127.0.0.1]:{sshd.ports[1]} {key}\n"
    connect(target).close()  # now known: strict mode accepts it


def test_ssh_config_aliases_and_identity_files_are_honoured(sshd: Sshd, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host pi-alias\n  HostName 127.0.0.1\n  IdentityFile {sshd.client_key}\n")
    known = sshd.known_hosts(tmp_path / "known_hosts")
    target = sshd.target(sshd.ports[0], known, address="pi-alias")
    conn = connect(
        type(target)(target.address, target.port, target.user, None, known),
        config=Config(runtime_ssh_path=str(ssh_config)),
    )
    try:
        assert conn.host == "127.0.0.1"
        assert conn.run("echo $SSH_CONNECTION", hide=True, in_stream=False).stdout.split()[2] == "127.0.0.1"
    finally:
        conn.close()


def test_a_plan_that_raises_fails_only_its_host(sshd: Sshd, tmp_path: Path) -> None:
    known = sshd.known_hosts(tmp_path / "known_hosts")

    def plan(node: Node) -> Sequence[AnyStep]:
        if node.name == "x":
            raise KeyError("ssh_port")
        return []

    nodes = [Node("x", sshd.target(sshd.ports[0], known)), Node("y", sshd.target(sshd.ports[1], known))]
    result: StageResult = run_stage("plan", nodes, plan, check=False, parallel=1)
    assert [h.status for h in result.hosts] == ["failed", "ok"]
    assert result.hosts[0].message == "planning the steps failed: KeyError: 'ssh_port'"


def test_sudo_n_wrapping_keeps_hostile_scripts_intact(
    local: LocalShell, fake_tools: FakeTools, tmp_path: Path
) -> None:
    sudo = fake_tools.bin / "sudo"
    sudo.write_text('#!/bin/sh\n[ "$1" = -n ] || exit 99\nshift\nexec "$@"\n')
    sudo.chmod(0o755)
    target = tmp_path / "it's $(here) `x`"
    Executor(local.context, sudo=True).run(Command(f"printf '%s' \"$0\" > {shlex.quote(str(target))}"))
    assert target.read_text() == "sh"
    step = File(str(target), "ok\n", owner=None, group=None)
    (result,) = run_steps(local.context, [step], sudo=True, dry_run=False, run=HostRun())
    assert result.status == "changed" and target.read_text() == "ok\n"


def test_a_refused_key_is_unreachable_with_what_to_check(sshd: Sshd, tmp_path: Path) -> None:
    sshd.other_key(tmp_path / "wrong_key")
    known = sshd.known_hosts(tmp_path / "known_hosts")
    target = SshTarget("127.0.0.1", sshd.ports[0], sshd.user, tmp_path / "wrong_key", known)
    result = run_stage("auth", [Node("node3", target)], lambda n: [], check=False)
    assert result.hosts[0].status == "unreachable"
    assert result.hosts[0].message.startswith(f"node3: {sshd.user}@127.0.0.1:{sshd.ports[0]} refused our keys")


@dataclass(frozen=True)
class Slow:
    """A step whose change never finishes in time."""

    name: str = "slow"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Change:
        return Change("wait", [Command("sleep 20")])


def test_a_command_past_its_timeout_fails_its_step(sshd: Sshd, tmp_path: Path) -> None:
    known = sshd.known_hosts(tmp_path / "known_hosts")
    node = Node("slowpoke", sshd.target(sshd.ports[0], known))
    result = run_stage("slow", [node], lambda n: [Slow()], command_timeout=0.5, check=False)
    (step,) = result.hosts[0].steps
    assert step.status == "failed" and step.error is not None
    assert (step.error.exit_code, step.error.stderr_tail) == (124, "stopped: still running after 0.5 s")
    assert result.hosts[0].duration < 10


def test_a_skip_is_reported_as_skipped_with_its_reason() -> None:
    """`skip(reason)` is an Ok to the step, and the runner's status for it is 'skipped', not 'ok'."""
    from invoke.config import Config as InvokeConfig
    from invoke.context import Context

    from picluster.remote import HostRun, Ok, run_steps, skip

    class CannotHere:
        name = "needs a disk"

        def probes(self) -> dict[str, str]:
            return {"disk": "test -b /dev/nonexistent-picluster-disk"}

        def parse(self, outputs: dict[str, ProbeOutput], marks: frozenset[str]) -> bool:
            return outputs["disk"].ok

        def decide(self, present: bool) -> Ok:
            return Ok("the disk is there") if present else skip("no such block device here")

    (result,) = run_steps(Context(InvokeConfig()), [CannotHere()], sudo=False, dry_run=False, run=HostRun())
    assert result.status == "skipped"
    assert result.reason == "skipped: no such block device here"


@dataclass(frozen=True)
class HangUp:
    """A step whose change ends the SSH session serving it, as a host losing power would."""

    name: str = "power cut"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Change:
        # NOTE: walk up to the sshd process of this session (not the listener) and kill it
        script = ("p=$PPID; while [ \"$(cat /proc/$p/comm)\" != sshd ]; do "
                  "p=$(cut -d' ' -f4 /proc/$p/stat); done; kill -9 \"$p\"; sleep 5")
        return Change("cut", [Command(script)])


def test_a_host_that_stops_answering_mid_stage_is_unreachable_with_what_to_do(sshd: Sshd, tmp_path: Path) -> None:
    known = sshd.known_hosts(tmp_path / "known_hosts")
    nodes = [Node("victim", sshd.target(sshd.ports[0], known)), Node("other", sshd.target(sshd.ports[1], known))]
    result = run_stage("cut", nodes, lambda n: [HangUp()] if n.name == "victim" else [], check=False)
    victim, other = result.hosts
    assert other.status == "ok"
    assert victim.status == "unreachable", victim
    assert victim.message == ("victim stopped answering during step 'power cut': check its power and network, "
                              "then run again (only this host: --limit victim)")


def test_an_upload_streams_over_real_ssh_and_arrives_whole(sshd: Sshd, tmp_path: Path) -> None:
    """The air-gap bundle's way: a local file read as it is sent, base64 on the SSH channel's stdin."""
    from stage_support import Upload

    source = tmp_path / "k3s-airgap-images-arm64.tar"
    source.write_bytes(os.urandom(8 * 1024 * 1024 + 3))
    known = sshd.known_hosts(tmp_path / "known_hosts")
    nodes = [Node("a", sshd.target(sshd.ports[0], known)), Node("b", sshd.target(sshd.ports[1], known))]
    result = run_stage("upload", nodes, lambda node: [Upload(source, tmp_path / node.name / source.name)])
    assert [h.status for h in result.hosts] == ["changed", "changed"]
    for node in nodes:
        assert (tmp_path / node.name / source.name).read_bytes() == source.read_bytes()
