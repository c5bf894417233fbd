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
from picluster.yamlfile import Checker, read_yaml

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


class _Reader(Checker):
    def __init__(self, path: Path, base: Path) -> None:
        super().__init__(path, SpecError)
        self.base = base

    def name(self, value: Any, key: str, pattern: re.Pattern[str] = _NAME) -> str:
        return self.text(value, key, pattern, "a valid name (lowercase letters, digits and dashes)")

    def file(self, value: Any, key: str) -> str:
        """A file under the releases file's folder, as the relative path written."""
        rel = self.text(value, key)
        target = (self.base / rel).resolve()
        if self.base.resolve() not in target.parents:
            raise self.fail(key, f"{rel!r} is outside {self.base}")
        if not target.is_file():
            raise self.fail(key, f"{rel!r}: no such file under {self.base}")
        return rel


def load_releases(path: str | Path = DEFAULT_RELEASES, versions: Versions | None = None) -> Releases:
    """Read and validate a releases file (files it names are relative to its folder)."""
    path = Path(path)
    r = _Reader(path, path.parent)
    raw = read_yaml(path, "releases", SpecError)
    try:
        versions = versions or load_versions(path.parent / "versions.yml")
    except VersionsError as err:
        raise SpecError(str(err)) from None
    entries = r.mapping(raw, "", required={"releases"})["releases"]
    if not isinstance(entries, list) or not entries:
        raise r.fail("releases", "expected a non-empty list")
    out = r.items(entries, "releases", lambda entry, key: _release(r, versions, entry, key))
    names = [release.name for release in out]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise r.fail(f"releases[{i}].name", f"release {name!r} is listed twice")
    releases = Releases(path=path, base=r.base, releases=out, versions=versions)
    releases.ordered()  # unknown dependencies and cycles fail here, at load time
    return releases


def _release(r: _Reader, versions: Versions, entry: Any, key: str) -> Release:
    e = r.mapping(entry, key, optional=_RELEASE_KEYS)
    name = r.name(e.get("name"), f"{key}.name")
    chart = _chart(r, versions, e.get("chart"), f"{key}.chart")
    bundled = e.get("bundled")
    if bundled is not None and bundled != chart.bundled:
        raise r.fail(f"{key}.bundled", f"{bundled!r}, but {versions.path} says chart {chart.name} is "
                                       f"bundled: {chart.bundled!r}")
    if bundled is None and not chart.installable:
        raise r.fail(f"{key}.chart", f"chart {chart.name} is not installable with helm "
                                     f"({'bundled with ' + chart.bundled if chart.bundled else 'a subchart'});"
                                     " say bundled: k3s or pick another chart")
    namespace = r.name(e.get("namespace"), f"{key}.namespace")
    values = r.file(e["values"], f"{key}.values") if e.get("values") is not None else None
    if bundled is not None and values is None:
        raise r.fail(f"{key}.values", "a bundled chart is customised through its values: give the file")
    return Release(
        name=name, chart=chart, namespace=namespace, values=values,
        depends_on=r.items(e.get("depends_on"), f"{key}.depends_on", r.text),
        before=r.items(e.get("before"), f"{key}.before", r.file),
        secrets=r.items(e.get("secrets"), f"{key}.secrets", lambda s, skey: _secret(r, s, skey, namespace)),
        lookups=_lookups(r, e.get("lookups"), f"{key}.lookups", namespace),
        manifests=r.items(e.get("manifests"), f"{key}.manifests", r.file),
        patches=r.items(e.get("patches"), f"{key}.patches", r.file),
        bundled=bundled,
    )


def _secret(r: _Reader, data: Any, key: str, namespace: str) -> SecretSpec:
    s = r.mapping(data, key, optional=_SECRET_KEYS)
    values = r.table(s.get("data"), f"{key}.data")
    for k, v in values.items():
        if not isinstance(k, str) or not _DATA_KEY.match(k):
            raise r.fail(f"{key}.data.{k}", "a Secret key is letters, digits, '-', '_' and '.'")
        if not isinstance(v, str):
            raise r.fail(f"{key}.data.{k}", f"expected a string (a template), got {type(v).__name__}")
    return SecretSpec(r.name(s.get("name"), f"{key}.name", _SECRET_NAME),
                      r.name(s.get("namespace", namespace), f"{key}.namespace"), values)


def _lookups(r: _Reader, data: Any, key: str, namespace: str) -> dict[str, Lookup]:
    lookups = {}
    for lname, spec in r.table(data or {}, key).items():
        lkey = f"{key}.{lname}"
        spec = r.mapping(spec, lkey, optional=_LOOKUP_KEYS)
        lookups[str(lname)] = Lookup(r.name(spec.get("namespace", namespace), f"{lkey}.namespace"),
                                     r.name(spec.get("secret"), f"{lkey}.secret", _SECRET_NAME),
                                     r.text(spec.get("key"), f"{lkey}.key"))
    return lookups


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
