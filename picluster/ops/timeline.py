"""The operations' timeline: what happened to which host, when, from any thread, shown as it happens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One thing that happened to a host, a group, or the "cluster"."""

    at: float          # seconds since the run started
    wall: float        # time.time() when it happened
    host: str          # a host, a group, or "cluster"
    what: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "wall": round(self.wall, 3), "host": self.host, "what": self.what,
                "detail": self.detail}


class Timeline:
    """Events in the order they happened, from any thread; `on_event` sees each as it is added."""

    def __init__(self, on_event: Callable[[Event], None] | None = None) -> None:
        self.start = time.monotonic()
        self.events: list[Event] = []
        self.on_event = on_event
        self._lock = threading.Lock()

    def add(self, host: str, what: str, detail: str = "") -> Event:
        with self._lock:
            event = Event(time.monotonic() - self.start, time.time(), host, what, detail)
            self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def first(self, host: str, what: str) -> Event | None:
        return next((e for e in self.events if e.host == host and e.what == what), None)


def event_line(e: Event) -> str:
    """One event as a console line (rich markup): offset, host, what, and the detail dimmed."""
    detail = f"  [dim]{e.detail}[/dim]" if e.detail else ""
    return f"[dim]+{e.at:6.1f}s[/dim] {e.host:<10} {e.what}{detail}"
