"""Run one stage on many hosts in parallel, collect a result per host, and fail once at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fabric import Config, Connection

from picluster.remote.connect import DEFAULT_TIMEOUT, Unreachable, connect
from picluster.remote.execute import LOST, run_steps
from picluster.remote.reboot import BOOT_WAIT_S, NotBack, wait_new_boot
from picluster.remote.results import HostResult, HostStatus, StageFailed, StageResult, StepResult
from picluster.remote.step import NEEDS_REBOOT, AnyStep, HostRun
from picluster.remote.target import HostLike

H = TypeVar("H", bound=HostLike)


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
) -> HostResult:
    """Connect to one host and run its planned steps; never raises.

    A step that schedules a reboot is waited for here (a new boot id within `reboot_wait` seconds), and
    the steps after it run on a new connection.
    """
    start = time.monotonic()

    def done(status: HostStatus, message: str = "", steps: list[StepResult] | None = None) -> HostResult:
        took = time.monotonic() - start
        return HostResult(host.name, status, took, steps or [], message, NEEDS_REBOOT in run.marks)

    run = HostRun()
    try:
        steps = list(plan(host))
    except Exception as e:  # NOTE: reported as this host's failure
        return done("failed", message=f"planning the steps failed: {type(e).__name__}: {e}")
    try:
        conn = connect(host.ssh, name=host.name, first_contact=first_contact, timeout=timeout, config=config)
    except Unreachable as e:
        return done("unreachable", message=str(e))
    opened = [conn]

    def reconnect_after_reboot(old_boot: str) -> Connection:
        for c in opened:
            c.close()
        wait_new_boot(host, old_boot, wait_s=reboot_wait)
        try:
            opened.append(connect(host.ssh, name=host.name, timeout=timeout, config=config))
        except Unreachable as e:
            raise NotBack(f"{host.name} came back from its reboot but refused SSH: {e}") from e
        return opened[-1]

    try:
        sudo = conn.user != "root"
        results = run_steps(conn, steps, sudo=sudo, dry_run=dry_run, run=run, command_timeout=command_timeout,
                            reboot=reconnect_after_reboot)
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
    command_timeout: float | None = None,
    config: Config | None = None,
    on_host_done: Callable[[HostResult], None] | None = None,
    check: bool = True,
) -> StageResult:
    """Run stage `name` on `hosts` (at most `parallel` at once); `plan(host)` gives each host's steps.

    `timeout` bounds connecting; `command_timeout` (default: none) bounds each command.
    Every host runs to its end whatever the others do. With `check` (the default), raise one
    `StageFailed` at the end if any host failed or was unreachable; it carries the full result.
    """
    start = time.monotonic()

    def one(host: H) -> HostResult:
        result = run_host(
            host,
            plan,
            dry_run=dry_run,
            first_contact=first_contact,
            timeout=timeout,
            command_timeout=command_timeout,
            config=config,
        )
        if on_host_done is not None:
            on_host_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        results = list(pool.map(one, hosts))
    stage = StageResult(name, dry_run, time.monotonic() - start, results)
    if check and stage.failures:
        raise StageFailed(stage)
    return stage
