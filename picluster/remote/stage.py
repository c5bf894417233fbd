"""Run one stage on many hosts in parallel, collect a result per host, and fail once at the end."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from fabric import Config, Connection
from paramiko.ssh_exception import SSHException

from picluster.remote.connect import DEFAULT_HOST_TIMEOUT, DEFAULT_TIMEOUT, Unreachable, connect
from picluster.remote.execute import LOST, CommandFailed, Executor, run_steps
from picluster.remote.reboot import BOOT_WAIT_S, NotBack, wait_new_boot
from picluster.remote.results import HostResult, HostStatus, StageFailed, StageResult, StepResult
from picluster.remote.settle import describe, parse_settle, settle_script
from picluster.remote.step import NEEDS_REBOOT, AnyStep, Command, HostRun
from picluster.remote.target import HostLike

H = TypeVar("H", bound=HostLike)
#: How long a command may run by default: generous enough for a full apt upgrade on a slow SD card.
DEFAULT_COMMAND_TIMEOUT = 1800.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage: every host was stopped; the message says per host what may be half-done."""


@dataclass
class Live:
    """The hosts a stage is working on: each one's run (the step it is in) and its open connections."""

    runs: dict[str, HostRun] = field(default_factory=dict)
    conns: dict[str, list[Connection]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, name: str) -> HostRun:
        """Register a host's run as it starts; a stopped stage hands out a stopped run."""
        with self.lock:
            run = self.runs.setdefault(name, HostRun())
        return run

    def opened(self, name: str, conn: Connection) -> None:
        """Register a connection the host's run uses (closed at once on an interrupt)."""
        with self.lock:
            self.conns.setdefault(name, []).append(conn)
            stopped = self.runs[name].stop.is_set() if name in self.runs else False
        if stopped:
            conn.close()

    def interrupt(self, names: Sequence[str]) -> str:
        """Stop every host now (no new step, connections closed); return what each host was doing, one line."""
        with self.lock:
            begun = set(self.runs)
            for name in names:
                self.runs.setdefault(name, HostRun()).stop.set()
            conns = [c for cs in self.conns.values() for c in cs]
            state = {n: (n in self.finished, self.runs[n].current) for n in names}
        for conn in conns:
            conn.close()
        parts = []
        for name in names:
            done, step = state[name]
            parts.append(f"{name} had finished" if done else
                         f"{name} stopped in step '{step}' (it may be half-done; work the host runs detached "
                         "completes on its own)" if step else
                         f"{name} stopped between steps" if name in begun else f"{name} had not started")
        return "interrupted: " + "; ".join(parts) + ". Run the same command again: it picks up from there."


def run_host(
    host: H,
    plan: Callable[[H], Sequence[AnyStep]],
    *,
    dry_run: bool = False,
    first_contact: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    command_timeout: float | None = None,
    config: Config | None = None,
    reboot_wait: float = BOOT_WAIT_S,
    host_timeout: float = DEFAULT_HOST_TIMEOUT,
    live: Live | None = None,
) -> HostResult:
    """Connect to one host and run its planned steps; never raises.

    A step that schedules a reboot is waited for here (a new boot id within `reboot_wait` seconds), and
    the steps after it run on a new connection. A host silent for `host_timeout` seconds is unreachable.
    """
    start = time.monotonic()
    live = live or Live()

    def done(status: HostStatus, message: str = "", steps: list[StepResult] | None = None) -> HostResult:
        took = time.monotonic() - start
        return HostResult(host.name, status, took, steps or [], message, NEEDS_REBOOT in run.marks)

    run = live.started(host.name)
    try:
        steps = list(plan(host))
    except Exception as e:  # NOTE: reported as this host's failure
        return done("failed", message=f"planning the steps failed: {type(e).__name__}: {e}")
    try:
        conn = connect(host.ssh, name=host.name, first_contact=first_contact, timeout=timeout, config=config,
                       host_timeout=host_timeout)
    except Unreachable as e:
        return done("unreachable", message=str(e))
    opened = [conn]
    live.opened(host.name, conn)

    def reconnect_after_reboot(old_boot: str) -> Connection:
        for c in opened:
            c.close()
        wait_new_boot(host, old_boot, wait_s=reboot_wait)
        try:
            opened.append(connect(host.ssh, name=host.name, timeout=timeout, config=config,
                                  host_timeout=host_timeout))
        except Unreachable as e:
            raise NotBack(f"{host.name} came back from its reboot but refused SSH: {e}") from e
        live.opened(host.name, opened[-1])
        return opened[-1]

    try:
        sudo = conn.user != "root"
        results: list[StepResult] = []
        if steps and not dry_run:
            results, conn = settle(conn, host.name, run, sudo=sudo, reconnect=reconnect_after_reboot)
        if not results or results[-1].status != "failed":
            results += run_steps(conn, steps, sudo=sudo, dry_run=dry_run, run=run, command_timeout=command_timeout,
                                 reboot=reconnect_after_reboot, detach=True)
    finally:
        for c in opened:
            c.close()
    statuses = {r.status for r in results}
    status: HostStatus = "failed" if "failed" in statuses else "changed" if "changed" in statuses else "ok"
    last = results[-1] if results else None
    if last is not None and last.status == "failed" and _lost(last):
        return done("unreachable", steps=results,
                    message=f"{host.name} stopped answering during step '{last.name}': check its power and "
                            f"network, then run again (only this host: --limit {host.name})")
    return done(status, steps=results)


def settle(conn: Connection, name: str, run: HostRun, *, sudo: bool,
           reconnect: Callable[[str], Connection]) -> tuple[list[StepResult], Connection]:
    """Deal with what an earlier run that died left on the host (see `picluster.remote.settle`).

    Return the result to show (none when the host was clean) and the connection to go on with.
    """
    step = "left by an earlier run"
    start = time.monotonic()
    try:
        stdout, _ = Executor(conn, sudo=sudo).run(Command(settle_script()))
    except CommandFailed as e:
        return [StepResult(step, "failed", time.monotonic() - start, error=e.error)], conn
    except (EOFError, ConnectionError, TimeoutError, SSHException) as e:
        return [StepResult(step, "failed", time.monotonic() - start, message=f"{LOST}{type(e).__name__}: {e}")], conn
    left = parse_settle(stdout)
    if left.going_down:
        try:
            conn = reconnect(left.boot_id)
        except NotBack as e:
            took = time.monotonic() - start
            return [StepResult(step, "failed", took, message=f"{e}; then run the stage again")], conn
        return [StepResult(step, "ok", time.monotonic() - start,
                           reason=f"{name} was going down (a reboot an earlier run scheduled): waited until it "
                                  "was back")], conn
    if left.busy:
        units = ", ".join(left.busy)
        return [StepResult(step, "failed", time.monotonic() - start,
                           message=f"changes an earlier run started still run on {name} after {left.waited}s "
                                   f"({units}); see `journalctl -u {left.busy[0]}` and run again when they are "
                                   "done")], conn
    said = describe(left)
    if not said:
        return [], conn
    if left.cancelled:
        run.marks.add(NEEDS_REBOOT)
        return [StepResult(step, "changed", time.monotonic() - start, diff=said)], conn
    return [StepResult(step, "ok", time.monotonic() - start, reason=said)], conn


def _lost(step: StepResult) -> bool:
    """Whether a failed step failed because the host went away (not because a command failed)."""
    # NOTE: Fabric reports a channel closed without an exit status (host gone mid-command) as exit -1
    return step.message.startswith(LOST) or (step.error is not None and step.error.exit_code == -1)


def run_stage(
    name: str,
    hosts: Sequence[H],
    plan: Callable[[H], Sequence[AnyStep]],
    *,
    dry_run: bool = False,
    parallel: int = 10,
    first_contact: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
    config: Config | None = None,
    on_host_done: Callable[[HostResult], None] | None = None,
    check: bool = True,
    host_timeout: float = DEFAULT_HOST_TIMEOUT,
) -> StageResult:
    """Run stage `name` on `hosts` (at most `parallel` at once); `plan(host)` gives each host's steps.

    `timeout` bounds connecting; `command_timeout` bounds each command; a host silent for `host_timeout`
    seconds is unreachable. Every host runs to its end whatever the others do. With `check` (the default),
    raise one `StageFailed` at the end if any host failed or was unreachable; it carries the full result.
    Ctrl-C stops every host at once and raises `Interrupted`, after printing what each host was doing.
    """
    start = time.monotonic()
    live = Live()

    def one(host: H) -> HostResult:
        result = run_host(host, plan, dry_run=dry_run, first_contact=first_contact, timeout=timeout,
                          command_timeout=command_timeout, config=config, host_timeout=host_timeout, live=live)
        with live.lock:
            live.finished.add(host.name)
        if on_host_done is not None:
            on_host_done(result)
        return result

    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))))
    try:
        futures = [pool.submit(one, host) for host in hosts]
        results = [f.result() for f in futures]
    except KeyboardInterrupt:
        message = live.interrupt([h.name for h in hosts])
        pool.shutdown(wait=False, cancel_futures=True)
        print(message, file=sys.stderr, flush=True)
        raise Interrupted(message) from None
    pool.shutdown()
    stage = StageResult(name, dry_run, time.monotonic() - start, results)
    if check and stage.failures:
        raise StageFailed(stage)
    return stage
