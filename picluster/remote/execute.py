"""Run steps on one host through an Invoke `Context` (a Fabric `Connection`, or a local `Context`)."""

from __future__ import annotations

import base64
import io
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from invoke.context import Context
from invoke.exceptions import CommandTimedOut, ThreadException
from paramiko.ssh_exception import SSHException

from picluster.remote.reboot import REBOOTING, NotBack, rebooting_from
from picluster.remote.results import CommandError, StepResult, StepStatus
from picluster.remote.step import AnyStep, Change, Command, HostRun, Ok, ProbeOutput, StepError

STDERR_LINES = 10
KILL_AFTER = 5  # seconds between TERM and KILL when a command times out on the host
CHUNK = 65536


class _Stdin:
    """Stdin for `Context.run` that hands out 64 KiB per read.

    NOTE: Invoke asks non-tty streams for one byte per read and sleeps 10 ms between reads,
    which would make a 10 KB file take seconds; returning more than asked keeps it one read.
    """

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        """Return the next chunk (empty at the end)."""
        return self._data.read(CHUNK)

    def close(self) -> None:
        """Nothing to release."""


class _Base64File:
    """Stdin that streams a local file as base64 lines (64 KiB of text per read), opened on first read."""

    RAW = CHUNK // 4 * 3   # whole base64 quanta: the lines concatenate to one valid encoding

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """Return the next encoded chunk (empty at the end, when the file is closed)."""
        if self._done:
            return b""
        if self._file is None:
            self._file = self.path.open("rb")
        chunk = self._file.read(self.RAW)
        if not chunk:
            self.close()
            return b""
        return base64.b64encode(chunk) + b"\n"

    def close(self) -> None:
        """Close the file (reads after it return nothing)."""
        self._done = True
        if self._file is not None:
            self._file.close()


def stdin_of(command: Command) -> _Stdin | _Base64File:
    """The stream a command's stdin comes from."""
    if command.stdin_file is not None:
        return _Base64File(command.stdin_file)
    return _Stdin(command.stdin or b"")


#: The message of a step during which the connection broke; the runner then calls the host unreachable.
LOST = "the connection broke: "


class CommandFailed(Exception):
    """A command exited non-zero."""

    def __init__(self, error: CommandError) -> None:
        super().__init__(f"`{error.command}` exited {error.exit_code}: {error.stderr_tail}")
        self.error = error


def wrap(script: str, *, sudo: bool, timeout: float | None = None) -> str:
    """Return the command line that runs `script` with POSIX sh, as root through `sudo -n` if asked.

    With `timeout`, coreutils `timeout` stops the script on the host itself (exit code 124), since
    closing the SSH channel would leave it running there.
    """
    line = "sh -c " + shlex.quote(script)
    if timeout is not None:
        line = f"timeout -k {KILL_AFTER} {timeout:g} {line}"
    return "sudo -n " + line if sudo else line


#: Transient units that run a change detached from its SSH session: the prefix, then a random id.
UNIT_PREFIX = "picluster-run-"
OUTPUT_DIR = "/run/picluster"


def detached(script: str, unit: str, timeout: float | None = None) -> str:
    """Return the command that runs `script` as the transient unit `unit` and waits for it, with its output.

    The unit belongs to systemd, not to the SSH session: a controller that dies or a link that drops
    leaves the change to finish on the host (a package install is never cut half-way), and the next run
    waits for it (`picluster.remote.settle`). Without systemd (a plain container, the unit tests' sshd) the
    script runs in the session as before.
    """
    out = f"{OUTPUT_DIR}/{unit}"
    limit = f" -p RuntimeMaxSec={max(1, round(timeout))}" if timeout is not None else ""
    return "\n".join([
        "if ! command -v systemd-run >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then "
        f"exec {wrap(script, sudo=False, timeout=timeout)}; fi",
        "trap '' HUP PIPE",
        f"mkdir -p -m 0700 {OUTPUT_DIR}",
        "rc=0",
        f"systemd-run --quiet --wait --collect --service-type=exec --unit={unit} "
        f"--description='picluster: a change detached from its SSH session' -p StandardInput=null "
        f"-p StandardOutput=file:{out}.out -p StandardError=file:{out}.err{limit} "
        f"/bin/sh -c {shlex.quote(script)} || rc=$?",
        f"cat {out}.out 2>/dev/null; cat {out}.err >&2 2>/dev/null; rm -f {out}.out {out}.err",
        'exit "$rc"',
    ])


def probe_script(commands: Iterable[str], nonce: str) -> str:
    """Return one script that runs every probe and prints its stdout followed by a `nonce rc` line."""
    parts = ["export LC_ALL=C"]
    for command in commands:
        parts.append(f"( {command}\n) </dev/null 2>/dev/null; printf '\\n%s %s\\n' {nonce} \"$?\"")
    return "\n".join(parts) + "\n"


def split_probes(stdout: str, names: list[str], nonce: str) -> dict[str, ProbeOutput] | None:
    """Split `probe_script` output back into one `ProbeOutput` per name; None if it is malformed."""
    pieces = re.split(rf"\n{re.escape(nonce)} (\d+)\n", stdout)
    if len(pieces) != 2 * len(names) + 1 or pieces[-1]:
        return None
    return {
        name: ProbeOutput(pieces[2 * i], int(pieces[2 * i + 1])) for i, name in enumerate(names)
    }


class Executor:
    """Reads facts and applies commands on one host; the only place a step's commands run."""

    def __init__(self, c: Context, *, sudo: bool, command_timeout: float | None = None, detach: bool = False) -> None:
        self.c = c
        self.sudo = sudo
        self.command_timeout = command_timeout
        self.detach = detach    # a change without stdin runs as a transient unit (see `detached`)

    def run(self, command: Command) -> tuple[str, str]:
        """Run one command; return (stdout, stderr) or raise `CommandFailed`."""
        limit = self.command_timeout
        stdin = stdin_of(command)
        if self.detach and command.stdin is None and command.stdin_file is None:
            line = wrap(detached(command.script, UNIT_PREFIX + secrets.token_hex(6), limit), sudo=self.sudo)
        else:
            line = wrap(command.script, sudo=self.sudo, timeout=limit)
        try:
            result = self.c.run(
                line,
                hide=True,
                warn=True,
                pty=False,
                # NOTE: a safety net only, for a host that stops answering; `timeout` on the host acts first
                timeout=None if limit is None else limit + KILL_AFTER + 10,
                in_stream=stdin,
            )
        except CommandTimedOut as e:
            raise CommandFailed(CommandError(command.script, -1, f"no answer from the host after {e.timeout} s")) from e
        finally:
            stdin.close()   # a command that ends before reading all of a streamed file leaves it open otherwise
        assert result is not None  # NOTE: only disown=True returns None
        if result.exited != 0:
            tail = "\n".join(result.stderr.rstrip().splitlines()[-STDERR_LINES:])
            if limit is not None and result.exited in (124, 137):
                tail = (tail + "\n" if tail else "") + f"stopped: still running after {limit:g} s"
            raise CommandFailed(CommandError(command.script, result.exited, tail))
        return result.stdout, result.stderr

    def read(self, probes: Mapping[str, str]) -> dict[str, ProbeOutput]:
        """Run every probe in one round trip and return their outputs by name."""
        if not probes:
            return {}
        nonce = "@picluster-" + secrets.token_hex(8)
        script = probe_script(probes.values(), nonce)
        detach, self.detach = self.detach, False   # reads stay in the session: nothing to finish
        try:
            stdout, _ = self.run(Command(script))
        finally:
            self.detach = detach
        outputs = split_probes(stdout, list(probes), nonce)
        if outputs is None:
            raise CommandFailed(CommandError(script, 0, "unexpected probe output: " + stdout[-500:]))
        return outputs


def run_step(ex: Executor, step: AnyStep, run: HostRun, *, dry_run: bool) -> StepResult:
    """Read the step's facts, decide, and apply unless `dry_run`; never raises."""
    start = time.monotonic()
    change: Change | None = None
    status: StepStatus
    try:
        facts = step.parse(ex.read(step.probes()), frozenset(run.marks))
        decision = step.decide(facts)
        if isinstance(decision, Ok):
            return StepResult(step.name, "skipped" if decision.skipped else "ok", time.monotonic() - start,
                              reason=decision.reason)
        change = decision
        if not dry_run:
            for command in change.commands:
                ex.run(command)
        run.record(change)
        status = "changed"
        error, message = None, ""
    except CommandFailed as e:
        status, error, message = "failed", e.error, ""
    except StepError as e:
        status, error, message = "failed", None, str(e)
    except (EOFError, ConnectionError, TimeoutError, SSHException) as e:
        status, error, message = "failed", None, f"{LOST}{type(e).__name__}: {e}"
    except ThreadException as e:   # NOTE: the link died while a thread streamed stdin (a cut upload)
        lost = [t.value for t in e.exceptions if isinstance(t.value, (EOFError, OSError, SSHException))]
        why = f"{type(lost[0]).__name__}: {lost[0]}" if lost else "ThreadException: " + " ".join(str(e).split())[:200]
        status, error, message = "failed", None, (LOST if lost else "") + why
    except Exception as e:  # NOTE: one broken step must not stop the other hosts
        status, error, message = "failed", None, f"{type(e).__name__}: {e}"
    return StepResult(
        step.name,
        status,
        time.monotonic() - start,
        diff=change.diff if change else "",
        commands=[cmd.script for cmd in change.commands] if change else [],
        error=error,
        message=message,
    )


def run_steps(
    c: Context,
    steps: Iterable[AnyStep],
    *,
    sudo: bool,
    dry_run: bool,
    run: HostRun,
    command_timeout: float | None = None,
    reboot: Callable[[str], Context] | None = None,
    detach: bool = False,
) -> list[StepResult]:
    """Run `steps` in order on one host; stop after the first failed step.

    A command running longer than `command_timeout` seconds is stopped and fails its step. A step that
    scheduled a reboot (the `rebooting` mark) is followed by `reboot(old boot id)`, which waits until the
    host is back and returns the new connection the later steps use. With `detach`, changes run as transient
    units that finish even when the session is gone.
    """
    ex = Executor(c, sudo=sudo, command_timeout=command_timeout, detach=detach)
    results: list[StepResult] = []
    for step in steps:
        if run.stop.is_set():
            break
        run.current = step.name
        results.append(run_step(ex, step, run, dry_run=dry_run))
        run.current = None
        if results[-1].status == "failed":
            break
        old_boot = rebooting_from(run.marks)
        if old_boot is None:
            continue
        run.marks = {m for m in run.marks if not m.startswith(REBOOTING)}
        if dry_run:
            continue
        if reboot is None:
            results.append(StepResult("wait for the reboot", "failed", 0.0,
                                      message="a step scheduled a reboot, but this runner cannot wait for one"))
            break
        waited = time.monotonic()
        try:
            c = reboot(old_boot)
        except NotBack as err:
            results.append(StepResult("wait for the reboot", "failed", time.monotonic() - waited,
                                      message=f"{err}; then run the stage again"))
            break
        ex = Executor(c, sudo=sudo, command_timeout=command_timeout, detach=detach)
        took = time.monotonic() - waited
        results.append(StepResult("wait for the reboot", "ok", took,
                                  reason=f"back after {took:.0f}s with a new boot id"))
    return results
