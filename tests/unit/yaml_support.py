"""Hostile YAML files, for every loader that reads one of ours (inventory, versions, releases).

Each case is (content, what the one-line error must say). `assert_refused` checks the loader's answer:
its own error class, one line, the file named first, and without blowing up. How fast it answers (the issue's
"within a second") is a figure of benchmarks/hostile_files.py, not an assertion here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BLOWUP_S = 15.0

LAUGHS = b'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + b"".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n".encode() for p, n in zip("abcdefgh", "bcdefghi", strict=True))

HOSTILE: dict[str, tuple[bytes, str]] = {
    "duplicate key": (b"a: 1\nb: 2\na: 3\n", r"line 3: 'a' appears twice in one mapping"),
    "nested duplicate key": (b"a:\n  x: 1\n  y: 2\n  x: 3\n", r"line 4: 'x' appears twice in one mapping"),
    "not UTF-8": ("a: 1\nb: caf\xe9\n".encode("latin-1"), r"line 2: byte 0xe9 is not UTF-8"),
    "UTF-16": ("a: 1\n".encode("utf-16"), r"line 1: byte 0xff is not UTF-8"),
    "list as key": (b"a: 1\n[x, y]: 2\n", r"line 2: a key is a list"),
    "mapping as key": (b"? {x: 1}\n: 2\n", r"line 1: a key is a mapping"),
    "deep flow nesting": (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", r"nest"),
    "deep block nesting": ("".join(f"{'  ' * i}k{i}:\n" for i in range(200)).encode(),
                           r"line \d+: nested more than 64 levels deep"),
    "alias bomb": (LAUGHS, r"line 2: alias \*a: YAML aliases are not accepted"),
    "many values": (b"[" + b", ".join([b"1"] * 100_000) + b"]\n", r"more than 10000 values"),
    "many MiB": (b"# padding\n" * 600_000, r"larger than 1 MiB"),
    "python tag": (b"a: !!python/object/apply:os.system [echo hi]\n",
                   r"line 1: not valid YAML: could not determine a constructor"),
}


def hostile(name: str) -> Any:
    """The pytest parameters of every hostile case, for a test taking (content, expected)."""
    return pytest.mark.parametrize(name, list(HOSTILE.values()), ids=list(HOSTILE))


def assert_refused(load: Callable[[Path], object], path: Path, content: bytes, expected: str,
                   error: type[Exception]) -> None:
    """`load(path)` of `content` raises `error`: one line naming `path` that matches `expected`, bounded."""
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(error) as caught:
        load(path)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert re.search(expected, message), message
    # a guard against expansion (an alias bomb unrolled takes minutes), not a speed target
    assert elapsed < BLOWUP_S, f"took {elapsed:.2f}s: {message}"
