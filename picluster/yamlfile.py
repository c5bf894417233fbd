"""Read a YAML file of ours (inventory, k8s/versions.yml, k8s/releases.yml) safely and within bounds.

Safe tags only; a key given twice, a key that is a mapping or a list, an alias, nesting deeper than
`MAX_DEPTH`, more than `MAX_NODES` values, a file over `MAX_BYTES` or not UTF-8 is refused. Every problem
is one line naming the file (and the line), raised as the caller's own error class, quickly: the bounds
are checked while the file is read, before anything large is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 1 << 20  # our files are a few KiB
MAX_DEPTH = 64
MAX_NODES = 10_000  # ours have a few hundred; bounds the time a file of many tiny values takes


class _Refused(Exception):
    """A problem found while composing or constructing, at a place in the file."""

    def __init__(self, mark: Mark | None, problem: str) -> None:
        super().__init__(problem)
        self.mark, self.problem = mark, problem


class _PyEvents(Reader, Scanner, Parser):
    """The pure-Python event source, when PyYAML was built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


def _event_source() -> Any:
    """libyaml's parser where PyYAML has it (scanning and parsing in C), else PyYAML's own."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return _PyEvents
    return CParser


# Composing stays in Python (below), where the bounds are checked as the events arrive.
if TYPE_CHECKING:
    _Events = _PyEvents
else:
    _Events = _event_source()


class _BoundedComposer(Composer):
    """Composes nodes, refusing aliases and counting depth and values as it goes."""

    peek_event: Callable[[], Any]  # from the event source it is mixed with
    check_event: Callable[..., bool]

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        mark = self.peek_event().start_mark
        if self.check_event(AliasEvent):
            raise _Refused(mark, f"alias *{self.peek_event().anchor}: YAML aliases are not accepted here; "
                                 "write the value out")
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


class _UniqueKeys(SafeConstructor):
    """Safe construction of mappings whose keys are plain and unique (plain YAML keeps the last silently)."""

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


class _Loader(_BoundedComposer, _Events, _UniqueKeys, Resolver):
    """The loader: events from libyaml where PyYAML has it."""

    def __init__(self, stream: str) -> None:
        _Events.__init__(self, stream)
        _BoundedComposer.__init__(self)
        _UniqueKeys.__init__(self)
        Resolver.__init__(self)


class _PyLoader(_BoundedComposer, _PyEvents, _UniqueKeys, Resolver):
    """The same loader on PyYAML's own parser."""

    def __init__(self, stream: str) -> None:
        _PyEvents.__init__(self, stream)
        _BoundedComposer.__init__(self)
        _UniqueKeys.__init__(self)
        Resolver.__init__(self)


def read_yaml(path: Path, kind: str, error: Callable[[str], Exception], missing: str = "") -> Any:
    """The data of the YAML file `path`; any problem raises `error` with one line naming the file.

    `kind` names the file in messages ("no such {kind} file"); `missing` is the hint added when it is absent.
    """
    text = _text(path, kind, error, missing)
    loader = None
    try:
        loader = _Loader(text)  # PyYAML's own reader checks the characters here already
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


def _line(mark: Mark | None) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""
