"""Files on the controller and bounded waits: what the stages, the operations and the lab all need.

A file is written through a temporary name in its own folder and renamed, so a reader (or a run killed
half-way) never sees half of it; it is created with its final mode, so a private file is never readable
by others, not even for a moment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class WaitTimedOut(Exception):
    """A bounded wait ran out; the message says what was waited for and how long."""


def write_atomic(path: Path, content: str | bytes, mode: int = 0o644, *, dir_mode: int | None = None) -> None:
    """Write `path` whole or not at all, with `mode` from the start; `dir_mode` makes missing folders so."""
    path = Path(path)
    if dir_mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2,
             *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `probe` until it returns something other than None/False; raise WaitTimedOut after `timeout`."""
    deadline = clock() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if clock() >= deadline:
            raise WaitTimedOut(f"timed out after {timeout:.0f}s waiting for {what}")
        sleep(min(interval, max(0.0, deadline - clock())))


#: Overrides where the controller keeps (and looks for) the cluster's kubeconfig.
KUBECONFIG_ENV = "PICLUSTER_KUBECONFIG"


def kubeconfig_path(cluster: str, state_dir: Path | None = None) -> Path:
    """Return where the controller keeps a cluster's kubeconfig: $PICLUSTER_KUBECONFIG, else `state_dir`
    (a lab's state folder) / kubeconfig, else $XDG_CONFIG_HOME/picluster/kubeconfig-<cluster>."""
    if os.environ.get(KUBECONFIG_ENV):
        return Path(os.environ[KUBECONFIG_ENV]).expanduser()
    if state_dir is not None:
        return Path(state_dir) / "kubeconfig"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / f"kubeconfig-{cluster}"
