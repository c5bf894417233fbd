"""A rich progress bar for waits: `title (waiting for a, b, c...)  done/total  elapsed`, or nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Update = Callable[[int, int, list[str]], None]
SHOWN = 3


@contextmanager
def waiting(title: str, *, console: Console | None = None, enabled: bool = True) -> Iterator[Update]:
    """Yield `update(done, total, pending_names)`; a no-op when not enabled."""
    if not enabled:
        yield lambda done, total, pending: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int, pending: list[str]) -> None:
            names = ", ".join(pending[:SHOWN]) + ("..." if len(pending) > SHOWN else "")
            bar.update(task, completed=done, total=total,
                       description=title + (f" (waiting for {names})" if pending else ""))

        yield update
