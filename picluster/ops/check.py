"""The testinfra gates: run `tests/infra/test_<gate>.py` over SSH against an inventory's hosts.

OpenSSH does the connecting (testinfra's ssh backend), from an ssh_config written for the run with
strict host-key checking against the hosts' known_hosts; the connection masters it opens are closed
when the gate ends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from picluster.inventory import Host, Inventory

REPO = Path(__file__).resolve().parents[2]
INFRA_TESTS = REPO / "tests" / "infra"
GATE_TIMEOUT_S = 900
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|error|errors|deselected)")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class GateError(Exception):
    """A gate that could not run at all (missing suite, pytest absent); the message says what to do."""


@dataclass
class GateResult:
    """What one gate found: counts, the failing checks, and pytest's output tail."""

    gate: str
    hosts: list[str]
    exit_code: int
    passed: int
    failed: int
    skipped: int
    failures: list[str]
    output: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, object]:
        return {"gate": self.gate, "hosts": self.hosts, "ok": self.ok, "passed": self.passed,
                "failed": self.failed, "skipped": self.skipped, "failures": self.failures,
                "duration": round(self.duration, 3)}


def gate_file(gate: str, suites: Path = INFRA_TESTS) -> Path:
    return suites / f"test_{gate}.py"


def ssh_config(hosts: Sequence[Host], control_dir: Path) -> str:
    """An ssh_config with one alias per host: strict host keys, batch mode, bounded connect time.

    Paths are quoted as ssh_config reads them (a quote or backslash escaped, `%` doubled), so a path is
    one argument naming that very file; one with a control character or `${` (the inventory refuses both)
    is refused here too, never written.
    """
    blocks = []
    for h in hosts:
        t = h.ssh
        lines = [f"Host {h.name}", f"  HostName {t.address}", f"  User {t.user}", f"  Port {t.port}",
                 "  BatchMode yes", "  StrictHostKeyChecking yes", "  ConnectTimeout 10",
                 f"  ControlPath {_ssh_path(control_dir, '/%C')}"]
        if t.key_file is not None:
            lines += [f"  IdentityFile {_ssh_path(t.key_file)}", "  IdentitiesOnly yes"]
        if t.known_hosts is not None:
            lines.append(f"  UserKnownHostsFile {_ssh_path(t.known_hosts)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _ssh_path(path: Path, tail: str = "") -> str:
    """`path` (then `tail`, as is) as one quoted ssh_config argument: its `%` and quoting characters escaped."""
    text = str(path)
    if _UNSAFE_PATH.search(text) or "${" in text:
        raise GateError(f"{text!r}: a path with a control character or '${{' cannot go into ssh_config; rename it")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + tail + '"'


def _summary(output: str) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for line in reversed(output.splitlines()):
        found = _COUNT.findall(line)
        if found:
            for n, word in found:
                counts["error" if word.startswith("error") else word] = int(n)
            break
    return counts


def run_gate(inv: Inventory, gate: str, hosts: Sequence[Host], *, junit: str | None = None,
             timeout: float = GATE_TIMEOUT_S, suites: Path = INFRA_TESTS) -> GateResult:
    """Run one gate's checks on `hosts`; never raises for failing checks, only when it cannot run."""
    suite = gate_file(gate, suites)
    if not suite.exists():
        raise GateError(f"no checks for {gate!r}: {suite} is missing")
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="picluster-gate-"))
    config = workdir / "ssh_config"
    config.write_text(ssh_config(hosts, workdir))
    args = [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider", "-q", "--tb=line", "-rfEs",
            "--hosts=" + ",".join(f"ssh://{h.name}" for h in hosts), f"--ssh-config={config}",
            "-o", "addopts=", "--rootdir", str(suites)]
    if junit:
        args.append(f"--junitxml={junit}")
    env = dict(os.environ, PICLUSTER_INVENTORY=str(inv.path.resolve()))
    try:
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = str(err.stdout or "") + f"\ngate {gate} did not finish within {timeout:.0f}s"
        code = 124
    finally:
        for h in hosts:  # close the connection masters testinfra left behind
            subprocess.run(["ssh", "-F", str(config), "-O", "exit", h.name], capture_output=True, timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)
    counts = _summary(output)
    failures = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return GateResult(gate=gate, hosts=[h.name for h in hosts], exit_code=code, passed=counts["passed"],
                      failed=counts["failed"] + counts["error"], skipped=counts["skipped"], failures=failures,
                      output=output, duration=time.monotonic() - start)
