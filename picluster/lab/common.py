"""Small helpers shared by the lab modules: the error type, bounded commands, bounded waits."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from picluster import localfs

T = TypeVar("T")

# Every command the lab runs is bounded; these are the defaults (seconds).
COMMAND_TIMEOUT = 60.0


class LabError(Exception):
    """The lab cannot do what was asked; the message is one line that says what to fix."""


def run(argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
        input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), bounded in time; on failure raise LabError with stderr's tail."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              env=env, check=False)
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: command not found; install it (see `invoke lab.up` prerequisites)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {tail[0]}")
    return proc


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Call probe until it returns something other than None/False; raise LabError after timeout."""
    try:
        return localfs.wait_for(what, probe, timeout, interval)
    except localfs.WaitTimedOut as err:
        raise LabError(str(err)) from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from path, or {} when it is missing or unreadable (state after a crash)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON atomically: a reader (or a crash) never leaves half of it."""
    localfs.write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def pid_cmdline(pid: int) -> list[str]:
    """The argv of a live process, or [] when it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
