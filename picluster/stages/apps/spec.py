"""k8s/releases.yml as typed, validated data, and the order the releases are applied in.

Every problem is one `SpecError` line naming the file and the key (`releases[3].depends_on: ...`). A
release's chart version is looked up in k8s/versions.yml, never written here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster.versions import REPO_ROOT, Chart, Versions, VersionsError, load_versions
from picluster.yamlfile import read_yaml

K8S_DIR = REPO_ROOT / "k8s"
DEFAULT_RELEASES = K8S_DIR / "releases.yml"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_RELEASE_KEYS = {"name", "chart", "namespace", "values", "depends_on", "before", "secrets", "lookups",
                 "manifests", "patches", "bundled"}
_SECRET_KEYS = {"name", "namespace", "data"}
_LOOKUP_KEYS = {"namespace", "secret", "key"}


class SpecError(Exception):
    """A releases file that cannot be used; the message is one line that says what to fix."""


@dataclass(frozen=True)
class SecretSpec:
    """A Kubernetes Secret made before a release; `data` values are templates rendered in memory."""

    name: str
    namespace: str
    data: Mapping[str, str]


@dataclass(frozen=True)
class Lookup:
    """A value read from a Secret in the cluster before the release's values are rendered."""

    namespace: str
    secret: str
    key: str


@dataclass(frozen=True)
class Release:
    """One entry of k8s/releases.yml, with its chart pinned from k8s/versions.yml."""

    name: str
    chart: Chart
    namespace: str
    values: str | None = None
    depends_on: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    lookups: Mapping[str, Lookup] = field(default_factory=dict)
    manifests: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()
    bundled: str | None = None

    @property
    def helm(self) -> bool:
        """True when picluster installs it with helm (False: bundled with K3S, customised by manifests)."""
        return self.bundled is None


@dataclass(frozen=True)
class Releases:
    """The whole file, validated; `ordered()` gives the releases in dependency order."""

    path: Path
    base: Path
    releases: tuple[Release, ...]
    versions: Versions

    def get(self, name: str) -> Release:
        for r in self.releases:
            if r.name == name:
                return r
        raise SpecError(f"{self.path}: no release named {name!r}; known: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.releases]

    def ordered(self, only: Sequence[str] | None = None) -> list[Release]:
        """The releases in dependency order (ties in file order); with `only`, those and nothing else."""
        order = topological(self.path, {r.name: r.depends_on for r in self.releases})
        picked = [self.get(name) for name in order]
        if only:
            for name in only:
                self.get(name)
            picked = [r for r in picked if r.name in only]
        return picked


def topological(path: Path | str, graph: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's order of `graph` (name -> names it depends on), ties broken by the graph's own order.

    An unknown dependency or a cycle raises SpecError naming it (the cycle as a -> b -> a).
    """
    names = list(graph)
    for name, deps in graph.items():
        for dep in deps:
            if dep not in graph:
                raise SpecError(f"{path}: release {name!r} depends on {dep!r}, which is not a release; "
                                f"known: {', '.join(names)}")
            if dep == name:
                raise SpecError(f"{path}: release {name!r} depends on itself")
    done: list[str] = []
    waiting = list(names)
    while waiting:
        ready = next((n for n in waiting if all(d in done for d in graph[n])), None)
        if ready is None:
            raise SpecError(f"{path}: dependency cycle: {' -> '.join(_cycle(graph, waiting))}; "
                            "remove one of these depends_on")
        done.append(ready)
        waiting.remove(ready)
    return done


def _cycle(graph: Mapping[str, Sequence[str]], waiting: list[str]) -> list[str]:
    """One cycle among the releases that could not be ordered, as a path that returns to its start."""
    start = waiting[0]
    path = [start]
    current = start
    while True:
        current = next(d for d in graph[current] if d in waiting)
        if current in path:
            return [*path[path.index(current):], current]
        path.append(current)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return value

    def text(self, value: Any, key: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{value!r} is not a valid name (lowercase letters, digits and dashes)")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {type(value).__name__}")
        return tuple(self.text(v, f"{key}[{i}]") for i, v in enumerate(value))

    def file(self, base: Path, value: Any, key: str) -> str:
        rel = self.text(value, key)
        target = (base / rel).resolve()
        if base.resolve() not in target.parents:
            raise self.fail(key, f"{rel!r} is outside {base}")
        if not target.is_file():
            raise self.fail(key, f"{rel!r}: no such file under {base}")
        return rel


def load_releases(path: str | Path = DEFAULT_RELEASES, versions: Versions | None = None) -> Releases:
    """Read and validate a releases file (files it names are relative to its folder)."""
    path = Path(path)
    r = _Reader(path)
    raw = read_yaml(path, "releases", SpecError)
    try:
        versions = versions or load_versions(path.parent / "versions.yml")
    except VersionsError as err:
        raise SpecError(str(err)) from None
    top = r.mapping(raw, "", {"releases"})
    entries = top.get("releases")
    if not isinstance(entries, list) or not entries:
        raise r.fail("releases", "expected a non-empty list")
    base = path.parent
    out: list[Release] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        key = f"releases[{i}]"
        e = r.mapping(entry, key, _RELEASE_KEYS)
        name = r.text(e.get("name"), f"{key}.name", _NAME)
        if name in seen:
            raise r.fail(f"{key}.name", f"release {name!r} is listed twice")
        seen.add(name)
        chart = _chart(r, versions, e.get("chart"), f"{key}.chart")
        bundled = e.get("bundled")
        if bundled is not None and bundled != chart.bundled:
            raise r.fail(f"{key}.bundled", f"{bundled!r}, but {versions.path} says chart {chart.name} is "
                                           f"bundled: {chart.bundled!r}")
        if bundled is None and not chart.installable:
            raise r.fail(f"{key}.chart", f"chart {chart.name} is not installable with helm "
                                         f"({'bundled with ' + chart.bundled if chart.bundled else 'a subchart'});"
                                         " say bundled: k3s or pick another chart")
        namespace = r.text(e.get("namespace"), f"{key}.namespace", _NAME)
        values = r.file(base, e["values"], f"{key}.values") if e.get("values") is not None else None
        if bundled is not None and values is None:
            raise r.fail(f"{key}.values", "a bundled chart is customised through its values: give the file")
        secrets = []
        for j, s in enumerate(e.get("secrets") or []):
            skey = f"{key}.secrets[{j}]"
            s = r.mapping(s, skey, _SECRET_KEYS)
            data = r.mapping(s.get("data"), f"{skey}.data", set(s.get("data") or {}))
            for k, v in data.items():
                if not isinstance(k, str) or not _DATA_KEY.match(k):
                    raise r.fail(f"{skey}.data.{k}", "a Secret key is letters, digits, '-', '_' and '.'")
                if not isinstance(v, str):
                    raise r.fail(f"{skey}.data.{k}", f"expected a string (a template), got {type(v).__name__}")
            secrets.append(SecretSpec(r.text(s.get("name"), f"{skey}.name", _SECRET_NAME),
                                      r.text(s.get("namespace", namespace), f"{skey}.namespace", _NAME), data))
        lookups = {}
        for lname, spec in r.mapping(e.get("lookups") or {}, f"{key}.lookups", set(e.get("lookups") or {})).items():
            lkey = f"{key}.lookups.{lname}"
            spec = r.mapping(spec, lkey, _LOOKUP_KEYS)
            lookups[str(lname)] = Lookup(r.text(spec.get("namespace", namespace), f"{lkey}.namespace", _NAME),
                                         r.text(spec.get("secret"), f"{lkey}.secret", _SECRET_NAME),
                                         r.text(spec.get("key"), f"{lkey}.key"))
        out.append(Release(
            name=name, chart=chart, namespace=namespace, values=values,
            depends_on=r.names(e.get("depends_on"), f"{key}.depends_on"),
            before=tuple(r.file(base, f, f"{key}.before[{j}]") for j, f in enumerate(e.get("before") or [])),
            secrets=tuple(secrets), lookups=lookups,
            manifests=tuple(r.file(base, f, f"{key}.manifests[{j}]") for j, f in enumerate(e.get("manifests") or [])),
            patches=tuple(r.file(base, f, f"{key}.patches[{j}]") for j, f in enumerate(e.get("patches") or [])),
            bundled=bundled,
        ))
    releases = Releases(path=path, base=base, releases=tuple(out), versions=versions)
    releases.ordered()  # unknown dependencies and cycles fail here, at load time
    return releases


def _chart(r: _Reader, versions: Versions, value: Any, key: str) -> Chart:
    ref = r.text(value, key)
    repo, sep, name = ref.partition("/")
    if not sep or not repo or not name:
        raise r.fail(key, f"{ref!r}: write <repo>/<chart>, e.g. jetstack/cert-manager")
    if repo not in versions.repos:
        raise r.fail(key, f"repo {repo!r} is not in {versions.path}; known: {', '.join(sorted(versions.repos))}")
    try:
        chart = versions.chart(name)
    except VersionsError as err:
        raise r.fail(key, str(err)) from None
    if chart.repo != repo:
        raise r.fail(key, f"{versions.path} has chart {name} in repo {chart.repo!r}, not {repo!r}")
    return chart
