"""Read a YAML file of ours (inventory, k8s/versions.yml, k8s/releases.yml) safely and within bounds, and check it.

Safe tags only; a key given twice, a key that is a mapping or a list, an alias, nesting deeper than
`MAX_DEPTH`, more than `MAX_NODES` values, a file over `MAX_BYTES` or not UTF-8 is refused. Every problem
is one line naming the file (and the line), raised as the caller's own error class, quickly: the bounds
are checked while the file is read, before anything large is built. `Checker` then walks the data,
failing the same way with the key path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 1 << 20  # our files are a few KiB
MAX_DEPTH = 64
MAX_NODES = 10_000  # ours have a few hundred; bounds the time a file of many tiny values takes

T = TypeVar("T")


class _Refused(Exception):
    """A problem found while composing or constructing, at a place in the file."""

    def __init__(self, mark: Any, problem: str) -> None:  # a Mark, PyYAML's or libyaml's
        super().__init__(problem)
        self.mark, self.problem = mark, problem


class _PyEvents(Reader, Scanner, Parser):
    """PyYAML's own event source, for when it was built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


def _event_source() -> Callable[[str], Any]:
    """libyaml's parser where PyYAML has it (scanning and parsing in C), else PyYAML's own."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return _PyEvents
    return CParser


# Composing stays in Python (below), where the bounds are checked as the events arrive.
_EVENTS = _event_source()


class _Loader(Composer, SafeConstructor, Resolver):
    """A safe loader within bounds: aliases refused, depth and values counted, keys plain and unique."""

    def __init__(self, stream: str) -> None:
        self._events = _EVENTS(stream)  # PyYAML's own reader checks the characters here already
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def check_event(self, *choices: type[Event]) -> bool:
        return bool(self._events.check_event(*choices))

    def peek_event(self) -> Event:
        return self._events.peek_event()

    def get_event(self) -> Event:
        return self._events.get_event()

    def dispose(self) -> None:
        self._events.dispose()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            raise _Refused(mark, f"alias *{event.anchor}: YAML aliases are not accepted here; write the value out")
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(mark, f"nested more than {MAX_DEPTH} levels deep; flatten it")
        if self._nodes > MAX_NODES:
            raise _Refused(mark, f"more than {MAX_NODES} values; this is not one of our files")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            mark = key_node.start_mark
            if not isinstance(key_node, ScalarNode):
                kind = "mapping" if isinstance(key_node, MappingNode) else "list"
                raise _Refused(mark, f"a key is a {kind}; keys are plain names or numbers")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(mark, "merge keys (<<) are not accepted here; write the keys out")
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Refused(mark, f"{key!r} appears twice in one mapping; each key may appear once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, kind: str, error: Callable[[str], Exception], missing: str = "") -> Any:
    """The data of the YAML file `path`; any problem raises `error` with one line naming the file.

    `kind` names the file in messages ("no such {kind} file"); `missing` is the hint added when it is absent.
    """
    text = _text(path, kind, error, missing)
    loader = None
    try:
        loader = _Loader(text)
        return loader.get_single_data()
    except _Refused as err:
        raise error(f"{path}: {_line(err.mark)}{err.problem}") from None
    except ReaderError as err:
        line = text[:err.position].count("\n") + 1
        raise error(f"{path}: line {line}: not valid YAML: {err.reason}; fix the YAML syntax") from None
    except yaml.MarkedYAMLError as err:
        problem = ": ".join(str(p) for p in (err.context, err.problem) if p) or "invalid YAML"
        raise error(f"{path}: {_line(err.problem_mark or err.context_mark)}not valid YAML: "
                    f"{' '.join(problem.split())}; fix the YAML syntax") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _text(path: Path, kind: str, error: Callable[[str], Exception], missing: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such {kind} file" + (f"; {missing}" if missing else "")) from None
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror}") from None
    if len(data) > MAX_BYTES:
        raise error(f"{path}: larger than {MAX_BYTES >> 20} MiB; {kind} files are a few KiB: "
                    "check that it is the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8; "
                    "save the file as UTF-8") from None


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""


class Checker:
    """Typed access to the data of a YAML file that fails with one line naming the file and the key path."""

    def __init__(self, path: Path, error: Callable[[str], Exception]) -> None:
        self.path = path
        self.error = error

    def fail(self, key: str, problem: str) -> Exception:
        """The error to raise: the file, the key path (`charts.metallb.version`) and the problem."""
        return self.error(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")

    def mapping(self, value: Any, key: str, *, required: Iterable[str] = (),
                optional: Iterable[str] = ()) -> dict[str, Any]:
        """`value` as a mapping with every `required` key and no key but those and the `optional` ones.

        Nothing (an empty YAML value) is an empty mapping when no key is required.
        """
        must = set(required)
        allowed = must | set(optional)
        if value is None and not must:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping with keys {', '.join(sorted(allowed))}, "
                                 f"got {type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(_child(key, unknown[0]), f"unknown key; allowed here: {', '.join(sorted(allowed))}")
        missing = sorted(must - set(value))
        if missing:
            raise self.fail(_child(key, missing[0]), "missing; add it")
        return value

    def table(self, value: Any, key: str) -> dict[Any, Any]:
        """`value` as a mapping of names the file chooses (hosts, charts) to their entries."""
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def items(self, value: Any, key: str, check: Callable[[Any, str], T], of: str = "") -> tuple[T, ...]:
        """The entries of the list `value` (nothing: none), each through `check(item, "key[i]")`."""
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list{' of ' + of if of else ''}, got {type(value).__name__}")
        return tuple(check(item, f"{key}[{i}]") for i, item in enumerate(value))

    def text(self, value: Any, key: str, pattern: re.Pattern[str] | None = None,
             what: str = "a non-empty string") -> str:
        """`value` as a non-empty string that `pattern` matches whole (`what` says what it is).

        With a pattern the value is taken exactly as written (a trailing newline or space never matches);
        without one, surrounding whitespace is removed.
        """
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise self.fail(key, f"expected a string, got the number {value!r}; quote it: \"{value}\"")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected {what}, got {_shown(value)}")
        if pattern is not None:
            if not pattern.fullmatch(value):
                raise self.fail(key, f"{_shown(value)} is not {what}")
            return value
        return value.strip()


def _shown(value: Any, limit: int = 60) -> str:
    """`value` for a one-line message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _child(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
