"""Fixtures for the runner and state tests: a real sshd on 127.0.0.1, fake host tools, a local shell."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config as InvokeConfig
from invoke.context import Context

from picluster.inventory import SshTarget
from picluster.remote import AnyStep, HostRun, StepResult, run_steps

SSHD = Path("/usr/sbin/sshd")
FAKE_TOOL = Path(__file__).parent.parent / "support" / "fake_tool.py"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """Create an ed25519 key pair at `path` and return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@dataclass(frozen=True)
class Node:
    """The smallest host the runner accepts: a name and how to reach it."""

    name: str
    ssh: SshTarget


@dataclass(frozen=True)
class Sshd:
    """A running sshd listening on two ports (two "hosts"), with its own keys."""

    dir: Path
    ports: tuple[int, int]
    client_key: Path
    host_key_line: str
    user: str

    def known_hosts(self, path: Path, key_line: str | None = None) -> Path:
        """Write a known_hosts file pinning both ports to `key_line` (default: the real host key)."""
        key = " ".join((key_line or self.host_key_line).split()[:2])
        path.write_text("".join(f"[127.0.0.1]:{p} {key}\n" for p in self.ports))
        return path

    def target(self, port: int, known_hosts: Path | None, address: str = "127.0.0.1") -> SshTarget:
        """Return the target for one port."""
        return SshTarget(address, port, self.user, self.client_key, known_hosts)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Start sshd -D on 127.0.0.1 (two free ports) with its own host key and authorized_keys."""
    if not SSHD.exists():
        pytest.skip("needs /usr/sbin/sshd: apt-get install openssh-server")
    if os.geteuid() != 0:
        pytest.skip("the sshd tests log in as root and run steps as root: run them as root (CI does)")
    d = tmp_path_factory.mktemp("sshd")
    host_key_line = keygen(d / "host_ed25519")
    client_pub = keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text(client_pub + "\n")
    ports = (free_port(), free_port())
    config = d / "sshd_config"
    config.write_text(
        "".join(f"Port {p}\n" for p in ports)
        + f"ListenAddress 127.0.0.1\nHostKey {d / 'host_ed25519'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # NOTE: sshd's privilege separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=(d / "sshd.log").open("w"))
    try:
        deadline = time.monotonic() + 10
        while not all(_listening(p) for p in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield Sshd(d, ports, d / "client_ed25519", host_key_line, getpass.getuser())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class FakeTools:
    """sysctl, systemctl, apt-get and modprobe stand-ins on PATH, with their calls and state."""

    bin: Path
    state: Path

    def calls(self) -> list[list[str]]:
        """Return every recorded call, as argv lists."""
        path = self.state / "calls.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def get(self) -> dict[str, Any]:
        """Return the tools' state."""
        path = self.state / "state.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def set(self, **state: Any) -> None:
        """Replace the tools' state."""
        (self.state / "state.json").write_text(json.dumps(state), encoding="utf-8")


@pytest.fixture
def fake_tools(tmp_path: Path) -> FakeTools:
    """Put fake host tools first on PATH for the `local` shell."""
    bin_dir, state = tmp_path / "fakebin", tmp_path / "fakestate"
    bin_dir.mkdir()
    state.mkdir()
    for tool in ("sysctl", "systemctl", "apt-get", "modprobe"):
        (bin_dir / tool).symlink_to(FAKE_TOOL)
    return FakeTools(bin_dir, state)


class LocalShell:
    """Runs steps through the runner's executor against this machine's /bin/sh."""

    def __init__(self, env: dict[str, str]) -> None:
        self.context = Context(InvokeConfig(overrides={"run": {"env": env}}))
        self.run = HostRun()

    def apply(self, steps: Sequence[AnyStep], *, dry_run: bool = False) -> list[StepResult]:
        """Run the steps (read facts, decide, apply) and return their results."""
        return run_steps(self.context, steps, sudo=False, dry_run=dry_run, run=self.run)


@pytest.fixture
def local(fake_tools: FakeTools) -> LocalShell:
    """A local shell whose PATH starts with the fake tools."""
    env = {"PATH": f"{fake_tools.bin}:{os.environ['PATH']}", "FAKE_STATE": str(fake_tools.state)}
    return LocalShell(env)


@pytest.fixture
def me() -> tuple[str, str]:
    """Return the current user and group names, for files the tests create without root."""
    user = getpass.getuser()
    return user, subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()


def require_tool(name: str) -> None:
    """Skip the test when a host tool is missing."""
    if shutil.which(name) is None:
        pytest.skip(f"needs {name}")
