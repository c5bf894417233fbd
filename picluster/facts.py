"""Facts several layers read the same way: the probe that reads each, and the parser that types it.

One place for each, so the stages, the operations and the gates cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The kernel's id of the current boot: a new one means the host really rebooted.
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"

K3S_BIN = "/usr/local/bin/k3s"
K3S_VERSION = f"{K3S_BIN} --version"

#: Who holds inhibitor locks (the kubelet's "delay" lock is what graceful node shutdown rests on).
INHIBITORS = "systemd-inhibit --list --no-pager --no-legend"
#: logind's effective InhibitDelayMaxSec, as the running daemon has it.
INHIBIT_DELAY = ("busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
                 "org.freedesktop.login1.Manager InhibitDelayMaxUSec")

_UNITS = {"server": "k3s", "agent": "k3s-agent"}


def k3s_unit(role: str) -> str | None:
    """Return the systemd unit K3S runs as for a role: k3s on servers, k3s-agent on agents, none else."""
    return _UNITS.get(role)


def k3s_version(text: str) -> str | None:
    """Return the version in `k3s --version` output ("k3s version v1.24.3+k3s1 (990ba0e8)"), or None."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "k3s" and parts[1] == "version":
            return parts[2]
    return None


@dataclass(frozen=True)
class Inhibitor:
    """One line of `systemd-inhibit --list`."""

    who: str
    what: str
    why: str
    mode: str


# systemd-inhibit --list: WHO UID USER PID COMM WHAT WHY MODE (WHO and WHY may contain spaces).
_INHIBITOR = re.compile(r"^(?P<who>.+?)\s+(?P<uid>\d+)\s+(?P<user>\S+)\s+(?P<pid>\d+)\s+(?P<comm>\S+)\s+"
                        r"(?P<what>\S+)\s+(?P<why>.*?)\s*(?P<mode>block|delay)$")


def parse_inhibitors(text: str) -> list[Inhibitor]:
    """Return the lines of `systemd-inhibit --list --no-legend` as Inhibitors ("No inhibitors." gives none)."""
    found = []
    for line in text.splitlines():
        m = _INHIBITOR.match(line.strip())
        if m:
            found.append(Inhibitor(m["who"].strip(), m["what"], m["why"].strip(), m["mode"]))
    return found


def kubelet_lock(inhibitors: Sequence[Inhibitor]) -> Inhibitor | None:
    """Return the kubelet's delay lock on shutdown, if it holds one."""
    for i in inhibitors:
        if i.who.lower() == "kubelet" and i.mode == "delay" and "shutdown" in i.what.split(":"):
            return i
    return None


def parse_usec(text: str) -> float | None:
    """Return `t 30000000` (busctl's answer for a uint64 µs property) as 30.0 seconds; None when unreadable."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "t" and parts[1].isdigit():
        return int(parts[1]) / 1e6
    return None
