"""`invoke doctor`: is this controller ready to drive the cluster, and if not, what to fix.

Python against pyproject.toml, Helm against the release table, the inventory's validity, the SSH key it
names, a known_hosts entry for every host, and (unless offline) every host answering SSH, all at once with a
short timeout. Each finding is ok, warn (works, but not as pinned) or fail (must be fixed), with the fix.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picluster.inventory import Host, Inventory

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
HELM_INSTALL = "https://helm.sh/docs/intro/install/"


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one subject (the controller, a file or a host), and what to do about it."""

    check: str
    subject: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class DoctorRun:
    findings: list[Finding] = field(default_factory=list)

    @property
    def to_fix(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == WARN]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.to_fix, "to_fix": len(self.to_fix), "warnings": len(self.warnings),
                "findings": [f.to_dict() for f in self.findings]}


# --- the controller ------------------------------------------------------------------------------------

_SPEC = re.compile(r"^(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)$")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def satisfies(version: Sequence[int], specifier: str) -> bool:
    """True when `version` (3, 11, 7) meets every clause of a simple specifier such as '>=3.11,<4'."""
    checks = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
              "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        m = _SPEC.match(clause)
        if m is None:
            continue
        wanted = _version(m.group(2))
        if not checks[m.group(1)](tuple(version[:len(wanted)]), wanted):
            return False
    return True


def check_python(version: Sequence[int] | None = None, requires: str | None = None) -> Finding:
    """The running Python against requires-python."""
    from picluster.controller import project_pins

    version = tuple(version or sys.version_info[:3])
    requires = requires if requires is not None else project_pins()[0]
    shown = ".".join(map(str, version))
    if satisfies(version, requires):
        return Finding("python", sys.executable, OK, f"Python {shown} ({requires or 'no pin'})")
    return Finding("python", sys.executable, FAIL, f"Python {shown}, picluster needs {requires}",
                   f"install Python {requires} and rebuild .venv (`rm -rf .venv && scripts/invoke --list`)")


def find_helm() -> str | None:
    """The helm the apps stage uses: $PICLUSTER_HELM, else its pinned build in the tools folder (never PATH's)."""
    from picluster.stages.apps import tools

    return tools.installed_helm()


def _managed_helm() -> str:
    """Where the apps stage installs its pinned helm, when it manages one ('' when it uses PATH's)."""
    try:
        from picluster.stages.apps import tools
    except ImportError:
        return ""
    try:
        return f"the apps stage installs the pinned build at {tools.helm_path()} on first use"
    except Exception:  # NOTE: no helm pinned among the binaries yet
        return ""


def check_helm(pinned: str | None, *, required: bool, found: str | None = None) -> Finding:
    """Helm against the release table's pin; without it the apps stage's releases are skipped."""
    from picluster.controller import NOT_INSTALLED, helm_version, same_release

    found = found if found is not None else helm_version(find_helm())
    fix = f"install Helm {pinned or 'v3'} ({HELM_INSTALL}) so that `helm` is on PATH"
    if found == NOT_INSTALLED or found.startswith("unusable"):
        managed = _managed_helm()
        if managed:  # the apps stage fetches its pinned helm itself: only a controller without internet must act
            return Finding("helm", "helm", WARN, f"helm {found} yet: {managed}",
                           "let the apps stage download it (internet), or set $PICLUSTER_HELM to a helm of yours")
        why = "the apps stage skips the Helm releases without it"
        return Finding("helm", "helm", FAIL if required else WARN, f"helm {found}: {why}", fix)
    if pinned and not same_release(found, pinned):
        return Finding("helm", "helm", WARN, f"helm {found}, the release table pins {pinned}", fix)
    return Finding("helm", "helm", OK, f"helm {found}" + (f" (pinned {pinned})" if pinned else ""))


def check_inventory(path: str | os.PathLike[str]) -> tuple[Inventory | None, Finding]:
    """Load and validate the inventory; its one-line error is the finding."""
    from picluster.inventory import InventoryError, load_inventory

    try:
        inv = load_inventory(path)
    except InventoryError as err:
        return None, Finding("inventory", str(path), FAIL, str(err), "fix the inventory (`invoke inventory.check`)")
    return inv, Finding("inventory", str(inv.path), OK, f"{len(inv.hosts)} hosts, valid")


# --- SSH: keys and known_hosts --------------------------------------------------------------------------


def check_key(path: Path | None, hosts: Sequence[str]) -> Finding:
    """The private key the inventory names: present, readable, private to its owner, a private key."""
    names = ", ".join(hosts)
    if path is None:
        return Finding("ssh key", names, OK, "no ssh_key_file: ~/.ssh/config and the SSH agent decide")
    fix_mode = f"chmod 600 {path}"
    if not path.is_file():
        return Finding("ssh key", str(path), FAIL, f"the key for {names} does not exist",
                       f"create it (`ssh-keygen -t ed25519 -f {path}`) or fix ssh_key_file in the inventory")
    try:
        head = path.read_text(encoding="ascii", errors="replace")[:100]
    except OSError as err:
        return Finding("ssh key", str(path), FAIL, f"cannot read it: {err.strerror}", fix_mode)
    if "PRIVATE KEY" not in head:
        return Finding("ssh key", str(path), FAIL, "not a private key (ssh_key_file names the private half)",
                       "point ssh_key_file at the private key, not the .pub")
    if path.stat().st_mode & 0o077:
        return Finding("ssh key", str(path), FAIL, "readable by others: ssh refuses such a key", fix_mode)
    return Finding("ssh key", str(path), OK, f"private key for {names}")


def known_hosts_file(host: Host) -> Path:
    """Where the host's key must be pinned: its inventory file, else ssh_config's, else ~/.ssh/known_hosts."""
    from fabric import Connection

    from picluster.remote.connect import known_hosts_path

    ssh = host.ssh
    return known_hosts_path(ssh, Connection(ssh.address, user=ssh.user, port=ssh.port))


def check_known_host(host: Host, path: Path | None = None) -> Finding:
    """A known_hosts entry for the host's address and port (hashed entries count)."""
    import paramiko

    ssh = host.ssh
    path = path or known_hosts_file(host)
    name = ssh.address if ssh.port == 22 else f"[{ssh.address}]:{ssh.port}"
    scan = f"`ssh-keyscan -p {ssh.port} {ssh.address} >> {path}` (compare the fingerprint with the host's own)"
    if not path.is_file():
        return Finding("known_hosts", host.name, FAIL, f"no known_hosts file {path}",
                       f"seed the host with `invoke image.seed`/`image.flash` (pins its key) or {scan}")
    try:
        keys = paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException) as err:
        return Finding("known_hosts", host.name, FAIL, f"{path} is unreadable: {err}", f"repair or remove {path}")
    entry = keys.lookup(name)
    if not entry:
        return Finding("known_hosts", host.name, FAIL, f"{name} is not in {path}: picluster refuses unknown keys",
                       f"pin it: {scan}")
    return Finding("known_hosts", host.name, OK, f"{name} pinned in {path} ({', '.join(sorted(entry.keys()))})")


def check_ssh_files(inv: Inventory) -> list[Finding]:
    """One finding per distinct key file, then one per host's known_hosts entry."""
    by_key: dict[Path | None, list[str]] = {}
    for h in inv.hosts.values():
        by_key.setdefault(h.ssh.key_file, []).append(h.name)
    found = [check_key(Path(path).expanduser() if path else None, names) for path, names in by_key.items()]
    return found + [check_known_host(h) for h in inv.hosts.values()]


# --- reachability ---------------------------------------------------------------------------------------


def reach(host: Host, timeout: float) -> Finding:
    """Log in over SSH with the pinned host key and run `true`, within `timeout` per step."""
    from picluster.remote import Unreachable, connect

    ssh = host.ssh
    where = f"{ssh.user}@{ssh.address}:{ssh.port}"
    try:
        conn = connect(ssh, name=host.name, timeout=timeout)
    except Unreachable as err:
        return Finding("reachable", host.name, FAIL, str(err))  # the reason says what to do
    try:
        conn.run("true", hide=True, timeout=max(1, round(timeout)), in_stream=False)
    except Exception as err:  # NOTE: logged in, but the session broke or timed out
        return Finding("reachable", host.name, FAIL, f"{where}: logged in, then {type(err).__name__}: {err}",
                       "look at the host's sshd and load")
    finally:
        conn.close()
    return Finding("reachable", host.name, OK, f"{where} answers")


def check_reachable(hosts: Sequence[Host], *, timeout: float = 3.0, parallel: int = 16) -> list[Finding]:
    """Every host at once (at most `parallel`), each bounded by `timeout`; a host still silent after
    3 × timeout (connect, banner, command) is reported as such, not waited for."""
    if not hosts:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))))
    futures = {h.name: pool.submit(reach, h, timeout) for h in hosts}
    rounds = -(-len(hosts) // max(1, min(parallel, len(hosts))))
    wait(futures.values(), timeout=3 * timeout * rounds + 1, return_when=FIRST_EXCEPTION)
    pool.shutdown(wait=False, cancel_futures=True)
    found = []
    for h in hosts:
        f = futures[h.name]
        if f.done() and not f.cancelled() and f.exception() is None:
            found.append(f.result())
        else:
            found.append(Finding("reachable", h.name, FAIL, f"no answer within {3 * timeout:.0f}s",
                                 "check the host is powered on and on the network"))
    return found


# --- the whole run --------------------------------------------------------------------------------------


def doctor(path: str | os.PathLike[str], *, reachability: str = "", timeout: float = 3.0,
           parallel: int = 16) -> DoctorRun:
    """Run every check. `reachability`: "" to connect to the hosts, else why they are not asked (skip)."""
    from picluster.controller import helm_pin

    run = DoctorRun([check_python()])
    inv, found = check_inventory(path)
    run.findings.append(check_helm(helm_pin(), required=inv is None or inv.lab is None))
    run.findings.append(found)
    if inv is None:
        run.findings.append(Finding("hosts", str(path), SKIP, "not checked: the inventory is not valid"))
        return run
    run.findings += check_ssh_files(inv)
    if reachability:
        run.findings.append(Finding("reachable", "all hosts", SKIP, reachability))
    else:
        run.findings += check_reachable(list(inv.hosts.values()), timeout=timeout, parallel=parallel)
    return run


STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}


def print_doctor(run: DoctorRun, console: Any) -> None:
    """A table of the findings (status, check, subject, detail, fix), then one line: what to fix."""
    from rich.table import Table
    from rich.text import Text

    from picluster.console import print_table

    table = Table(title="doctor", title_justify="left")
    for column in ("status", "check", "subject", "detail", "fix"):
        table.add_column(column)
    for f in run.findings:
        table.add_row(Text(f.status, STYLE[f.status]), f.check, Text(f.subject), Text(f.detail), Text(f.fix))
    print_table(console, table)
    for f in run.to_fix:
        console.print(Text.assemble(("to fix: ", "bold red"), f"{f.check} {f.subject}: {f.fix or f.detail}"),
                      soft_wrap=True)
    summary = f"doctor: {len(run.to_fix)} to fix, {len(run.warnings)} warnings"
    console.print(Text(summary, "bold red" if run.to_fix else "green"), soft_wrap=True)
