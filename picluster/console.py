"""The one way picluster makes a console, prints a table and survives a closed pipe.

On a terminal: its width, colours (unless NO_COLOR), tables that wrap their cells, or fall back to a plain
"column: value" layout when even wrapped they would not fit. Anywhere else (a pipe, a file, a CI log): no
width limit, so every table keeps every column and every cell whole, no colours unless FORCE_COLOR says so,
and progress is one line per event (`Console.is_terminal` is False).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

# A pipe has no width: wide enough for any natural table, far below what would make rich slow.
PIPE_WIDTH = 10_000
# On a terminal, a word longer than this (a URL, a long version) may be folded over lines rather than force
# the whole table into the one-value-per-line layout.
FOLD_AT = 20
# How a task ends when the reader of its output went away (`invoke inventory.show | head`): 128 + SIGPIPE.
BROKEN_PIPE = 141

F = TypeVar("F", bound=Callable[..., Any])


def colour_forced(environ: os._Environ[str] | dict[str, str] | None = None) -> bool | None:
    """True when FORCE_COLOR asks for colours, False when NO_COLOR forbids them, else None (decide by the
    stream). NO_COLOR wins over FORCE_COLOR (https://no-color.org, https://force-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", ""):
        return False
    if env.get("FORCE_COLOR", ""):
        return True
    return None


def make_console(*, stderr: bool = False, file: IO[str] | None = None,
                 environ: dict[str, str] | None = None) -> Console:
    """Return a console for stdout (or stderr, or `file`) that never cuts what it prints."""
    made = _console_class()
    stream = file or (sys.stderr if stderr else sys.stdout)
    env = dict(os.environ) if environ is None else environ
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    forced = colour_forced(env)
    if tty:
        return made(file=file, stderr=stderr, force_terminal=True, no_color=forced is False,
                    color_system="auto" if forced is not False else None, _environ=env)
    return made(file=file, stderr=stderr, force_terminal=False, force_interactive=False, width=PIPE_WIDTH,
                color_system="standard" if forced else None, no_color=not forced, soft_wrap=False,
                _environ=env)


@functools.cache
def _console_class() -> type[Console]:
    """rich's Console, ending quietly with exit code 141 (not 1) when the reader of stdout goes away."""
    from rich.console import Console

    class PipeSafeConsole(Console):
        def on_broken_pipe(self) -> None:
            _silence_stdout()
            raise SystemExit(BROKEN_PIPE)

    return PipeSafeConsole


def is_live(console: Console) -> bool:
    """True when the console can redraw in place (bars, spinners); else print one line per event."""
    return console.is_terminal and console.is_interactive


def _plain(console: Console, cell: RenderableType) -> str:
    from rich.text import Text

    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return console.render_str(cell).plain
    return str(cell)


def table_records(console: Console, table: Table) -> Iterator[list[tuple[str, str]]]:
    """Yield each row of `table` as (column header, cell text) pairs, markup removed."""
    headers = [_plain(console, c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    for i in range(table.row_count):
        yield [(headers[j], _plain(console, cells[j][i])) for j in range(len(headers))]


def _chrome(table: Table) -> int:
    """The columns' padding and the box's rules: the width a table takes beyond its cells."""
    _, right, _, left = table.padding
    width = (left + right) * len(table.columns)
    if table.box is not None:
        width += len(table.columns) + 1 if table.show_edge else len(table.columns) - 1
    return width


def _measure(console: Console, table: Table, fold_at: int = PIPE_WIDTH) -> list[tuple[int, int]]:
    """Per column: its narrowest (the longest word of any cell, up to `fold_at`; the longest cell for a no_wrap
    column, whose values are never broken) and natural width (the longest cell)."""
    from rich.measure import Measurement

    options = console.options.update_width(PIPE_WIDTH)
    found = []
    for column in table.columns:
        sizes = [Measurement.get(console, options, c) for c in (column.header, *column.cells)]
        widest = max(m.maximum for m in sizes)
        found.append((widest if column.no_wrap else min(fold_at, max(m.minimum for m in sizes)), widest))
    return found


def min_width(console: Console, table: Table, fold_at: int = PIPE_WIDTH) -> int:
    """The table's narrowest width: every cell wrapped at its words, only words over `fold_at` folded."""
    return sum(low for low, _ in _measure(console, table, fold_at)) + _chrome(table)


def fits(console: Console, table: Table) -> bool:
    """True when the table's narrowest layout (cells wrapped, words over FOLD_AT folded) fits the console."""
    return min_width(console, table, FOLD_AT) <= console.width


def _fit(console: Console, table: Table) -> None:
    """Give each column at least its longest word (or FOLD_AT, when whole words cannot fit), and the room left in
    proportion to what it would use."""
    fold_at = PIPE_WIDTH if min_width(console, table) <= console.width else FOLD_AT
    sizes = _measure(console, table, fold_at)
    room = console.width - _chrome(table)
    if sum(high for _, high in sizes) <= room:
        return
    spare = room - sum(low for low, _ in sizes)
    wants = [high - low for low, high in sizes]
    total = sum(wants) or 1
    for column, (low, _), want in zip(table.columns, sizes, wants, strict=True):
        column.width = low + spare * want // total


def print_table(console: Console, table: Table) -> None:
    """Print `table` whole: as a table when it fits (cells wrap at their words, folding only words too long for
    any layout; no_wrap columns stay on one line), else as "column: value" lines per row."""
    if not console.is_terminal or fits(console, table):
        for column in table.columns:
            column.overflow = "fold"
        if console.is_terminal:
            _fit(console, table)
        console.print(table)
        return
    from rich.text import Text

    if table.title:
        console.print(Text(_plain(console, table.title), style="bold"), soft_wrap=True)
    for record in table_records(console, table):
        (first, value), *rest = record
        console.print(Text(f"{first}: {value}", style="bold"), soft_wrap=True)
        for header, text in rest:
            if text:
                console.print(Text(f"  {header}: {text}"), soft_wrap=True)


def pipe_safe(body: F) -> F:
    """Wrap a task body: when the reader closes the pipe (`| head`), stop quietly with exit code 141."""
    if getattr(body, "__pipe_safe__", False):
        return body

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = body(*args, **kwargs)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _silence_stdout()
            from invoke.exceptions import Exit

            raise Exit(code=BROKEN_PIPE) from None

    run.__pipe_safe__ = True  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def print_json(data: Any) -> None:
    """Print `data` as JSON on stdout (the only thing a `--json` task prints there)."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
