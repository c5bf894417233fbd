"""Fixtures for the runner and state tests: a real sshd on 127.0.0.1, fake host tools, a local shell."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grafana_com_double import GrafanaComDouble
from invoke.config import Config as InvokeConfig
from invoke.context import Context

from picluster.inventory import SshTarget
from picluster.remote import AnyStep, HostRun, StepResult, run_steps

SSHD = Path("/usr/sbin/sshd")
FAKE_TOOL = Path(__file__).parent.parent / "support" / "fake_tool.py"
FAKE_TOOLS = ("sysctl", "systemctl", "apt-get", "modprobe")


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

    def closed_port(self) -> int:
        """Return a port where nothing listens: an unreachable host."""
        return free_port()

    def other_key(self, path: Path) -> str:
        """Return the public line of a new key that is not this sshd's host key."""
        return keygen(path)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_sshd(d: Path, user: str) -> Iterator[Sshd]:
    """Run `sshd -D -e -f <own config>` on two free ports of 127.0.0.1; stop it (by its PID) after."""
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
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # NOTE: sshd's privilege separation directory
    log = d / "sshd.log"
    with log.open("w") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=err)
    try:
        deadline = time.monotonic() + 10
        while not all(_listening(p) for p in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {log.read_text()}")
            time.sleep(0.05)
        yield Sshd(d, ports, d / "client_ed25519", host_key_line, user)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class FakeTools:
    """sysctl, systemctl, apt-get and modprobe stand-ins (tests/support/fake_tool.py) on PATH."""

    bin: Path
    state: Path

    @classmethod
    def install(cls, root: Path) -> FakeTools:
        """Create the stand-ins under `root`."""
        tools = cls(root / "fakebin", root / "fakestate")
        tools.bin.mkdir()
        tools.state.mkdir()
        for tool in FAKE_TOOLS:
            (tools.bin / tool).symlink_to(FAKE_TOOL)
        return tools

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


class LocalShell:
    """Runs steps through the runner's own executor against this machine's /bin/sh."""

    def __init__(self, env: dict[str, str]) -> None:
        self.context = Context(InvokeConfig(overrides={"run": {"env": env}}))
        self.run = HostRun()

    def apply(self, steps: Sequence[AnyStep], *, dry_run: bool = False) -> list[StepResult]:
        """Run the steps (read facts, decide, apply) and return their results."""
        return run_steps(self.context, steps, sudo=False, dry_run=dry_run, run=self.run)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 (two ports, own keys) that logs root in with its own client key."""
    if not SSHD.exists():
        pytest.skip("needs /usr/sbin/sshd: apt-get install openssh-server")
    if os.geteuid() != 0:
        pytest.skip("the sshd tests log in as root and run steps as root: run them as root (CI does)")
    with running_sshd(tmp_path_factory.mktemp("sshd"), getpass.getuser()) as server:
        yield server


@pytest.fixture
def fake_tools(tmp_path: Path) -> FakeTools:
    """Fake sysctl, systemctl, apt-get and modprobe, for the `local` shell's PATH."""
    return FakeTools.install(tmp_path)


@pytest.fixture
def local(fake_tools: FakeTools) -> LocalShell:
    """A local shell whose PATH starts with the fake tools."""
    return LocalShell({"PATH": f"{fake_tools.bin}:{os.environ['PATH']}", "FAKE_STATE": str(fake_tools.state)})


@pytest.fixture
def me() -> tuple[str, str]:
    """Return the current user and group names, for files the tests create without root."""
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    return getpass.getuser(), group


@pytest.fixture(autouse=True)
def private_secret_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets the code makes or reads live in a store of the test's own, never in the user's home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def grafana_com() -> Iterator[GrafanaComDouble]:
    """grafana.com's dashboard downloads, as a test double on 127.0.0.1."""
    double = GrafanaComDouble().start()
    yield double
    double.stop()


@pytest.fixture(autouse=True)
def private_grafana_com(grafana_com: GrafanaComDouble, monkeypatch: pytest.MonkeyPatch) -> GrafanaComDouble:
    """Dashboards the code downloads come from the test double, never from the internet."""
    from picluster.stages.apps.dashboards import SITE_ENV

    monkeypatch.setenv(SITE_ENV, grafana_com.url)
    grafana_com.missing.clear()
    return grafana_com


@pytest.fixture(scope="session")
def made_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Minio CA and certificate of the reference inventory, made once for the apps tests to copy."""
    from picluster.stages.apps import pki

    folder = tmp_path_factory.mktemp("state") / "pki"
    pki.ensure(folder, "s3.picluster.example.com", "10.0.0.11")
    return folder
