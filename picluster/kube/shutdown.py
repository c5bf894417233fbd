"""Graceful node shutdown settings that work together: kubelet grace periods and logind's inhibit delay.

The kubelet takes a systemd "delay" inhibitor lock for shutdownGracePeriod; logind honours it for at most
InhibitDelayMaxSec (default 5s). Of the grace period, the last shutdownGracePeriodCriticalPods seconds are
kept for critical pods, so ordinary pods get grace - critical.
"""

from __future__ import annotations

import re

LOGIND_DEFAULT_INHIBIT_DELAY = 5.0   # systemd-logind's InhibitDelayMaxSec when nothing sets it

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 0.001, "msec": 0.001, "us": 1e-6, "usec": 1e-6, "µs": 1e-6, "ns": 1e-9,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}


def shutdown_problems(grace: float, critical: float, inhibit_delay_max: float | None) -> list[str]:
    """Why this graceful-shutdown configuration would not work; [] when it is consistent.

    `grace` is the kubelet's shutdownGracePeriod, `critical` its shutdownGracePeriodCriticalPods, and
    `inhibit_delay_max` logind's effective InhibitDelayMaxSec (None: not set, logind's default 5s applies);
    all in seconds.
    """
    problems: list[str] = []
    if grace <= 0:
        problems.append(f"shutdownGracePeriod is {grace:g}s: graceful node shutdown is off and pods are killed "
                        "at power-off; set it to the time pods need to stop (pi-cluster uses 30s)")
    if critical < 0:
        problems.append(f"shutdownGracePeriodCriticalPods is {critical:g}s: it cannot be negative")
    elif grace > 0 and critical >= grace:
        problems.append(f"shutdownGracePeriodCriticalPods ({critical:g}s) must be less than shutdownGracePeriod "
                        f"({grace:g}s): it is the part of the grace period kept for critical pods, so ordinary "
                        f"pods would get {max(grace - critical, 0):g}s")
    delay = LOGIND_DEFAULT_INHIBIT_DELAY if inhibit_delay_max is None else inhibit_delay_max
    if grace > 0 and delay < grace:
        origin = (f"logind InhibitDelayMaxSec is not set, so its default {delay:g}s applies"
                  if inhibit_delay_max is None else f"logind InhibitDelayMaxSec is {delay:g}s")
        problems.append(f"{origin}, below shutdownGracePeriod ({grace:g}s): systemd would power off after "
                        f"{delay:g}s while pods are still stopping; set InhibitDelayMaxSec={grace:g} (or more) "
                        "in the logind drop-in")
    return problems


def timespan_seconds(text: str) -> float:
    """A systemd time span ("30", "30s", "1min 30s", "500ms", "infinity") or Go duration ("1m30s") in seconds."""
    value = text.strip().lower()
    if value == "infinity":
        return float("inf")
    if not value:
        raise ValueError("an empty time span")
    total, pos = 0.0, 0
    for m in _SPAN.finditer(value):
        if value[pos:m.start()].strip():
            break
        if m.group(2) not in _UNITS:
            raise ValueError(f"{text!r}: unknown time unit {m.group(2)!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if value[pos:].strip() or pos == 0:
        raise ValueError(f"{text!r} is not a time span such as 30s or 1min 30s")
    return total
