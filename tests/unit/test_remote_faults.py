"""Faults on the way to a host, caused for real against the local sshd: cut and truncated writes, silent hosts,
host keys trusted on first contact."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from picluster.inventory import SshTarget
from picluster.remote import Change, Command, run_stage
from picluster.remote import execute as execute_module
from picluster.state._fs import write_command

if TYPE_CHECKING:
    from conftest import Sshd


@dataclass(frozen=True)
class Node:
    name: str
    ssh: SshTarget


@dataclass(frozen=True)
class Apply:
    """A step that runs the given commands (no probes)."""

    commands: tuple[Command, ...]
    name: str = "write"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Change:
        return Change("write", list(self.commands))


def _settled(folder: Path, deadline_s: float = 15.0) -> list[str]:
    """Wait until no temporary file of a write is left in `folder` (the host's side finishes on its own)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        left = [p.name for p in folder.iterdir() if ".picluster-" in p.name]
        if not left:
            return []
        time.sleep(0.1)
    return left


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    target = tmp_path / "remote" / "config"
    target.parent.mkdir()
    target.write_bytes(b"old content\n")
    return target


def test_a_truncated_transfer_leaves_the_old_file_and_fails(sshd: Sshd, tmp_path: Path, old_file: Path) -> None:
    """The stream ends early at a line boundary (valid base64, fewer bytes): the digest check refuses it."""
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20))
    short = tmp_path / "short"
    short.write_bytes(big.read_bytes()[: 1 << 19])   # whole base64 lines of the first half
    full = write_command(str(old_file), big, mode=0o644, owner=None, group=None)
    cut = Command(full.script, stdin_file=short)
    node = Node("a", sshd.target(sshd.ports[0], sshd.known_hosts(tmp_path / "known_hosts")))
    result = run_stage("write", [node], lambda n: [Apply((cut,))], check=False)
    (step,) = result.hosts[0].steps
    assert step.status == "failed" and step.error is not None
    assert step.error.stderr_tail == f"rejected: the new {old_file} arrived incomplete (sha256 differs); " \
                                     "the old one stays"
    assert old_file.read_bytes() == b"old content\n"
    assert _settled(old_file.parent) == []


def test_a_whole_transfer_is_installed(sshd: Sshd, tmp_path: Path, old_file: Path) -> None:
    new = os.urandom(300_000)
    node = Node("a", sshd.target(sshd.ports[0], sshd.known_hosts(tmp_path / "known_hosts")))
    cmd = write_command(str(old_file), new, mode=0o640, owner=None, group=None)
    result = run_stage("write", [node], lambda n: [Apply((cmd,))], check=False)
    assert result.hosts[0].status == "changed", result.hosts[0]
    assert old_file.read_bytes() == new
    assert oct(old_file.stat().st_mode & 0o777) == "0o640"


class _CutAfter:
    """A stdin that closes the SSH connection after `chunks` reads: the link lost mid-transfer."""

    def __init__(self, inner: Any, transport: Any, chunks: int) -> None:
        self.inner, self.transport, self.left = inner, transport, chunks

    def read(self, size: int = -1) -> bytes:
        if self.left == 0:
            time.sleep(1)                  # the host has taken every whole line sent so far
            self.transport.sock.close()    # then the link dies, as a dead cable or a killed controller would
            time.sleep(1)
            return b""
        self.left -= 1
        return bytes(self.inner.read(size))

    def close(self) -> None:
        self.inner.close()


def test_a_connection_cut_mid_transfer_leaves_the_old_file(sshd: Sshd, tmp_path: Path, old_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection dies half-way through a streamed 4 MiB file: the host keeps the old file, the host is
    reported as lost, and nothing is left behind."""
    from picluster.remote.connect import connect
    from picluster.remote.execute import CommandFailed, Executor

    big = tmp_path / "big"
    big.write_bytes(os.urandom(4 << 20))
    conn = connect(sshd.target(sshd.ports[0], sshd.known_hosts(tmp_path / "known_hosts")), name="a")
    real_stdin_of = execute_module.stdin_of
    monkeypatch.setattr(execute_module, "stdin_of",
                        lambda command: _CutAfter(real_stdin_of(command), conn.transport, chunks=20))
    try:
        with pytest.raises(CommandFailed) as lost:
            Executor(conn, sudo=False).run(write_command(str(old_file), big, mode=0o644, owner=None, group=None))
    finally:
        conn.close()
    assert lost.value.error.exit_code == -1      # a channel closed without an exit status: the runner's "lost"
    assert _settled(old_file.parent) == []
    assert old_file.read_bytes() == b"old content\n"


# --- host keys ---------------------------------------------------------------------------------------------


def test_the_changed_key_message_gives_an_ssh_keygen_line_that_works_on_a_non_default_port(
        sshd: Sshd, tmp_path: Path) -> None:
    import re
    import shlex
    import subprocess

    other = sshd.other_key(tmp_path / "other_host_key")
    known = sshd.known_hosts(tmp_path / "known_hosts", other)
    result = run_stage("keys", [Node("node1", sshd.target(sshd.ports[0], known))], lambda n: [], check=False)
    message = result.hosts[0].message
    assert "\n" not in message and "SHA256:" in message
    command = re.search(r"`(ssh-keygen -R [^`]+)`", message)
    assert command is not None, message
    assert command.group(1) == f"ssh-keygen -R [127.0.0.1]:{sshd.ports[0]} -f {known}"
    subprocess.run(shlex.split(command.group(1)), check=True, capture_output=True)
    assert f"[127.0.0.1]:{sshd.ports[0]} " not in known.read_text()   # the line it names is the one removed
    assert f"[127.0.0.1]:{sshd.ports[1]} " in known.read_text()       # and only that one


def test_trust_shows_the_sha256_fingerprint_and_records_only_when_confirmed(sshd: Sshd, tmp_path: Path) -> None:
    import subprocess

    from picluster.remote.connect import Unreachable, connect
    from picluster.remote.trust import Offered, offered_key, trust

    known = tmp_path / "known_hosts"
    target = sshd.target(sshd.ports[1], known)
    expected = subprocess.run(["ssh-keygen", "-lf", str(sshd.dir / "host_ed25519.pub")], capture_output=True,
                              text=True, check=True).stdout.split()[1]
    shown: list[str] = []

    def no(offered: Offered) -> bool:
        shown.append(offered.fingerprint)
        return False

    assert trust(offered_key(target), no).endswith("not trusted; nothing recorded")
    assert shown == [expected] and not known.exists()
    with pytest.raises(Unreachable):
        connect(target).close()
    said = trust(offered_key(target), lambda offered: True)
    assert said.startswith(f"[127.0.0.1]:{sshd.ports[1]}: trusted ssh-ed25519 {expected}")
    connect(target).close()   # strict checking now accepts it
    assert trust(offered_key(target), no).startswith(f"[127.0.0.1]:{sshd.ports[1]}: already trusted")
    assert known.read_text().count("\n") == 1


def test_trust_refuses_a_key_that_differs_from_the_recorded_one(sshd: Sshd, tmp_path: Path) -> None:
    from picluster.remote.connect import Unreachable
    from picluster.remote.trust import offered_key, trust

    known = sshd.known_hosts(tmp_path / "known_hosts", sshd.other_key(tmp_path / "other"))
    before = known.read_text()
    with pytest.raises(Unreachable, match=rf"ssh-keygen -R \[127.0.0.1\]:{sshd.ports[0]} -f"):
        trust(offered_key(sshd.target(sshd.ports[0], known)), lambda offered: True)
    assert known.read_text() == before


def test_trust_of_a_closed_port_is_one_line_within_the_timeout(sshd: Sshd, tmp_path: Path) -> None:
    from picluster.remote.connect import Unreachable
    from picluster.remote.trust import offered_key

    start = time.monotonic()
    with pytest.raises(Unreachable, match="cannot reach") as err:
        offered_key(sshd.target(sshd.closed_port(), tmp_path / "known_hosts"), timeout=2)
    assert "\n" not in str(err.value) and time.monotonic() - start < 3


# --- every wait bounded --------------------------------------------------------------------------------------


def test_a_connection_keeps_alive_and_gives_up_on_unacknowledged_data(sshd: Sshd, tmp_path: Path) -> None:
    import socket

    from picluster.remote.connect import connect

    target = sshd.target(sshd.ports[0], sshd.known_hosts(tmp_path / "known_hosts"))
    conn = connect(target, host_timeout=30)
    try:
        assert conn.transport is not None
        assert conn.transport.packetizer._Packetizer__keepalive_interval == 5  # type: ignore[attr-defined]
        assert conn.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 25_000
    finally:
        conn.close()


def test_a_port_that_never_says_its_banner_is_unreachable_within_the_timeout(tmp_path: Path) -> None:
    import socket

    from picluster.remote.connect import Unreachable, connect

    with socket.socket() as mute:   # accepts TCP (the kernel's backlog) but never speaks SSH
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        target = SshTarget("127.0.0.1", mute.getsockname()[1], "root", None, tmp_path / "known_hosts")
        start = time.monotonic()
        with pytest.raises(Unreachable) as err:
            connect(target, name="mute", timeout=1.0)
        took = time.monotonic() - start
    assert took < 3, took
    assert str(err.value).startswith("mute: ") and "\n" not in str(err.value)


def test_commands_have_a_generous_timeout_by_default() -> None:
    from picluster.remote.phases import Connecting
    from picluster.remote.stage import DEFAULT_COMMAND_TIMEOUT

    assert Connecting().command_timeout == DEFAULT_COMMAND_TIMEOUT >= 1800   # a full apt upgrade on a slow Pi
    assert Connecting().host_timeout == 60


@dataclass(frozen=True)
class Sleep:
    name: str = "long work"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Change:
        return Change("sleep", [Command("sleep 30")])


def test_ctrl_c_stops_every_host_within_two_seconds_and_says_what_each_was_doing(sshd: Sshd, tmp_path: Path) -> None:
    import signal
    import threading

    from picluster.remote.stage import Interrupted

    known = sshd.known_hosts(tmp_path / "known_hosts")
    nodes = [Node("busy", sshd.target(sshd.ports[0], known)), Node("quick", sshd.target(sshd.ports[1], known))]
    threads_before = threading.active_count()
    sent: list[float] = []

    def ctrl_c() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(2.0, ctrl_c)
    timer.start()
    with pytest.raises(Interrupted) as err:
        run_stage("work", nodes, lambda n: [Sleep()] if n.name == "busy" else [], check=False)
    assert time.monotonic() - sent[0] < 2
    message = str(err.value)
    assert "busy stopped in step 'long work' (it may be half-done" in message
    assert "quick had finished" in message and message.endswith("Run the same command again: it picks up from "
                                                                 "there.")
    end = time.monotonic() + 2
    while threading.active_count() > threads_before and time.monotonic() < end:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before, threading.enumerate()


# --- what an earlier run left: the settle script run by a real shell, systemctl a stand-in ---------------------


def _settle(tmp_path: Path, *, timers: str = "", units_for: int = 0, state: str = "running") -> tuple[str, str]:
    """Run the settle script with a systemctl that lists `timers`, and one picluster unit for `units_for` polls."""
    import subprocess

    from picluster.remote.settle import settle_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls"
    count = tmp_path / "polls"
    count.write_text("0")
    (bin_dir / "systemctl").write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$1" in
  is-system-running) echo {state};;
  stop) ;;
  list-units)
    case "$*" in
      *reboot*) [ -n "{timers}" ] && echo "{timers} loaded active waiting picluster: reboot";;
      *picluster-run-*) n=$(cat {count}); echo $((n + 1)) > {count}
         [ "$n" -lt {units_for} ] && echo "picluster-run-abc.service loaded active running picluster";;
    esac;;
esac
exit 0
""")
    (bin_dir / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", settle_script(wait_s=30)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout, log.read_text()


def test_a_stale_reboot_timer_is_cancelled_and_reported(tmp_path: Path) -> None:
    from picluster.remote.settle import describe, parse_settle

    out, calls = _settle(tmp_path, timers="picluster-reboot.timer")
    left = parse_settle(out)
    assert left.cancelled == ("picluster-reboot.timer",) and not left.busy and not left.going_down
    assert "stop -- picluster-reboot.timer" in calls
    assert describe(left).startswith("cancelled the reboot an earlier run scheduled and never saw through "
                                     "(picluster-reboot.timer)")


def test_changes_left_running_are_waited_for(tmp_path: Path) -> None:
    from picluster.remote.settle import describe, parse_settle

    out, _ = _settle(tmp_path, units_for=3)
    left = parse_settle(out)
    assert left.found == ("picluster-run-abc.service",) and left.busy == () and 2 <= left.waited <= 4
    assert describe(left) == (f"waited {left.waited}s for changes an earlier run left running "
                              "(picluster-run-abc.service)")


def test_a_clean_host_says_nothing_and_a_host_going_down_is_seen(tmp_path: Path) -> None:
    from picluster.remote.settle import describe, parse_settle

    out, calls = _settle(tmp_path)
    assert describe(parse_settle(out)) == "" and "stop" not in calls.split()
    down, _ = _settle(tmp_path / "down", state="stopping")
    assert parse_settle(down).going_down


def test_a_change_runs_detached_only_where_systemd_runs(tmp_path: Path) -> None:
    """Without systemd (here) the detached form runs the script in the session, with its timeout, exit code kept."""
    import subprocess

    from picluster.remote.execute import detached

    done = subprocess.run(["sh", "-c", detached("echo out; echo err >&2; exit 3", "picluster-run-t", 5)],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    slow = subprocess.run(["sh", "-c", detached("sleep 10", "picluster-run-t", 0.5)], capture_output=True, timeout=30)
    assert slow.returncode == 124
    script = detached("apt-get install x", "picluster-run-t", 1800)
    assert "systemd-run --quiet --wait --collect --service-type=exec --unit=picluster-run-t" in script
    assert "-p RuntimeMaxSec=1800" in script and "trap '' HUP PIPE" in script
