"""Powering hosts off and watching them go down, as the controller sees it over the network.

How "down" is observed: the SSH port first stops accepting (sshd stopped; the kernel still answers with
a reset), then the host stops answering at all — no accept, no reset — once its kernel has halted (a
switched-off NIC: the neighbour lookup fails, EHOSTUNREACH, or the connect times out). A host is down
when its SSH port has been silent for `silent_polls` polls in a row; a reset is never "down", because
on a real host it only means sshd has stopped while the other units (K3S among them) still stop.

Where an address keeps answering after its host has stopped (a lab node's network namespace outlives its
container, so its kernel-side resets never stop), the network cannot tell; the caller then passes a
`stopped(name)` record of its own to the observer, which decides instead of the silence rule.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from picluster.inventory import Host
from picluster.ops.timeline import Timeline

POWEROFF = "systemctl poweroff --no-block"
# Beyond the kubelet's grace period: systemd stopping units (k3s issue #2400: ~90 s on containerd-shim).
DOWN_MARGIN_S = 90.0
POLL_S = 0.5

PortState = Literal["open", "refused", "silent"]
Waiting = Callable[[str, int, int, list[str]], None]   # (group, down, total, still up)


def port_state(address: str, port: int, timeout: float = 1.0) -> PortState:
    """`open` (something accepts), `refused` (the kernel answers with a reset), or `silent` (no answer)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as err:
        if err.errno in (errno.ECONNRESET, errno.ECONNABORTED):
            return "refused"
        return "silent"   # timed out, host or network unreachable: nothing answers for that address


class PowerObserver:
    """Says whether a host is down: its SSH port silent twice in a row, or what the caller's record says.

    `stopped(name)`, when given, is the authority (for addresses that answer after their host stopped);
    `how` then says what it reads, for the user.
    """

    def __init__(self, stopped: Callable[[str], bool] | None = None,
                 probe: Callable[[str, int], PortState] = port_state, silent_polls: int = 2, *,
                 how: str = "") -> None:
        self.stopped = stopped
        self.probe = probe
        self.silent_polls = silent_polls
        self._how = how
        self._silent: dict[str, int] = {}

    @property
    def how(self) -> str:
        """What "down" means for this observer, in one line."""
        if self.stopped is not None:
            return self._how or "the caller's record of each host (its address answers after it stopped)"
        return f"its SSH port silent (no accept, no reset) for {self.silent_polls} polls in a row"

    def poll(self, host: Host) -> tuple[PortState, bool]:
        """The SSH port's state now, and whether the host counts as down."""
        state = self.probe(host.ssh.address, host.ssh.port)
        if self.stopped is not None:
            return state, self.stopped(host.name)
        self._silent[host.name] = self._silent.get(host.name, 0) + 1 if state == "silent" else 0
        return state, self._silent[host.name] >= self.silent_polls


def issue_poweroff(host: Host, command: str = POWEROFF, timeout: float = 10.0) -> str:
    """Ask one host to power off; '' when it accepted (or dropped the session doing so), else why not."""
    from picluster.remote import Unreachable, connect
    from picluster.remote.execute import wrap

    try:
        conn = connect(host.ssh, name=host.name, timeout=timeout)
    except Unreachable as err:
        return str(err)
    try:
        result = conn.run(wrap(command, sudo=conn.user != "root"), hide=True, warn=True, in_stream=False,
                          timeout=30)
        if result is not None and result.exited != 0:
            return f"{host.name}: `{command}` exited {result.exited}: {result.stderr.strip()[-300:]}"
        return ""
    except Exception:  # NOTE: the session dropped because the host is going down: that is the point
        return ""
    finally:
        conn.close()


def down_timeout(members: Sequence[Host]) -> float:
    """How long a group may take to be down: the longest kubelet grace period in it plus a margin."""
    return max((h.settings.shutdown.grace for h in members if h.is_k3s), default=0) + DOWN_MARGIN_S


# --- one group -------------------------------------------------------------------------------------------


def ask_poweroff(members: Sequence[Host], tl: Timeline, poweroff: Callable[[Host], str]) -> dict[str, str]:
    """Ask every member to power off at once; return why, by host, for those that refused."""

    def ask(h: Host) -> str:
        why = poweroff(h)
        if why:
            tl.add(h.name, "poweroff failed", why)
        else:
            tl.add(h.name, "poweroff issued")
        return why

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        answers = list(pool.map(ask, members))
    return {h.name: why for h, why in zip(members, answers, strict=True) if why}


def poll_down(pending: Sequence[Host], observer: PowerObserver, tl: Timeline, closed: set[str]) -> list[Host]:
    """Poll every pending host once; note on the timeline when its SSH closed and when it is down; return
    those down now. `closed` holds the hosts whose SSH was already seen closed."""
    with ThreadPoolExecutor(max_workers=len(pending)) as pool:   # a silent host costs a connect timeout
        polled = list(zip(pending, pool.map(observer.poll, pending), strict=True))
    down = []
    for h, (state, is_down) in polled:
        if state != "open" and h.name not in closed:
            closed.add(h.name)
            tl.add(h.name, "ssh closed", f"port {h.ssh.port} {state}")
        if is_down:
            down.append(h)
            tl.add(h.name, "down")
    return down


def wait_down(name: str, members: Sequence[Host], pending: Sequence[Host], tl: Timeline, observer: PowerObserver,
              timeout: float, *, waiting: Waiting | None = None, poll: float = POLL_S) -> list[Host]:
    """Poll the `pending` members of group `name` until each is down or `timeout` passes; return those that
    are not. `waiting` hears the progress (down, of all the members) before each round and at the end."""
    left = list(pending)
    closed: set[str] = set()
    deadline = time.monotonic() + timeout

    def tell() -> None:
        if waiting is not None:
            waiting(name, len(members) - len(left), len(members), [h.name for h in left])

    while left:
        tell()
        for h in poll_down(left, observer, tl, closed):
            left.remove(h)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    for h in left:
        tl.add(h.name, "still up", f"not down after {timeout:g}s")
    tell()
    return left


def power_off_group(name: str, members: Sequence[Host], tl: Timeline, outcome: dict[str, str],
                    observer: PowerObserver, timeout: float, *, waiting: Waiting | None = None,
                    poweroff: Callable[[Host], str] = issue_poweroff, poll: float = POLL_S) -> list[str]:
    """Power off every member in parallel and wait until each is down; record each one's `outcome` (down,
    still up, failed) and return the names of those not down."""
    tl.add(name, "group started", ", ".join(h.name for h in members))
    refused = ask_poweroff(members, tl, poweroff)
    outcome.update(dict.fromkeys(refused, "failed"))
    left = wait_down(name, members, [h for h in members if h.name not in refused], tl, observer, timeout,
                     waiting=waiting, poll=poll)
    still = {h.name for h in left}
    for h in members:
        if h.name not in refused:
            outcome[h.name] = "still up" if h.name in still else "down"
    tl.add(name, "group done")
    return [h.name for h in left] + list(refused)
