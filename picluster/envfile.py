"""Environment files that systemd's `EnvironmentFile=` and a shell's `set -a; . FILE` read the same way.

Every value is single-quoted, and a single quote inside it is written as `"'"` between two single-quoted
parts (`it's` is `'it'"'"'s'`). Both readers take single-quoted text literally and join adjacent quoted
parts; no backslash is ever written, so the readers' different backslash rules (sh's, and systemd's, which
changed between versions) never apply, and `'\\''` is not used: systemd reads a quote after a backslash
literally and then no longer starts quoted text. So a password with `$(...)`, backticks, quotes, spaces,
`\\` or `#` reaches the program exactly as typed (proven through dash and bash, and through systemd 252's
own parser in `tests/unit/test_envfile.py`), and no value can start a second line: a control character is
refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def quote(value: str) -> str:
    """`value` single-quoted for sh and systemd alike; ValueError for a control character (a second line)."""
    if _CONTROL.search(value):
        raise ValueError("a value of an environment file holds a control character (a second line, a CR or a tab)")
    return "'" + value.replace("'", "'\"'\"'") + "'"


def env_file(pairs: Iterable[tuple[str, str]]) -> str:
    """The lines NAME='value' of `pairs`, each value quoted by `quote`."""
    lines = []
    for name, value in pairs:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"{name}={quote(value)}\n")
    return "".join(lines)
