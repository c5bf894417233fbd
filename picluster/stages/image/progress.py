"""Progress reporting for long work (download, write, verify): a small protocol, a silent and a rich one."""

from __future__ import annotations

import time
from typing import Any, Protocol


class Progress(Protocol):
    """What long work reports: a named task with a byte total, advanced as bytes go by."""

    def start(self, what: str, total: int | None, done: int = 0) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...

    def note(self, line: str) -> None: ...


class Silent:
    """Reports nothing (tests, --quiet); keeps the last notes for inspection."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.tasks: list[str] = []

    def start(self, what: str, total: int | None, done: int = 0) -> None:
        self.tasks.append(what)

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def note(self, line: str) -> None:
        self.notes.append(line)


class RichProgress:
    """A rich progress bar with size, speed and ETA on a terminal; off one, a line when each task starts and ends."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as _Progress

        from picluster.console import is_live, make_console

        self.console = make_console(stderr=True)
        self.live = is_live(self.console)
        self._columns: tuple[Any, ...] = (
            TextColumn("{task.description:<10}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self._factory = _Progress
        self._bar: Any = None
        self._task: Any = None
        self._what, self._done, self._started = "", 0, 0.0

    def start(self, what: str, total: int | None, done: int = 0) -> None:
        self.finish()
        self._what, self._done, self._started = what, done, time.monotonic()
        if not self.live:
            size = f"{total} bytes" if total is not None else "size unknown"
            self.note(f"{what}: started ({size}{f', {done} already done' if done else ''})")
            return
        self._bar = self._factory(*self._columns, console=self.console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(what, total=total, completed=done)

    def advance(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._what:
            self.note(f"{self._what}: done ({self._done} bytes in {time.monotonic() - self._started:.1f}s)")
        self._what = ""

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
