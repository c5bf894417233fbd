"""Load and validate k8s/versions.yml, the one place versions are pinned.

Every problem is one `VersionsError` line naming the file and the key (`charts.metallb.version: ...`).
Lookups: `k3s_version()`, `chart("metallb")`, `repo_url("jetstack")`, `binary("restic")`; `load_versions()` gives
the whole table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from picluster.yamlfile import read_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VERSIONS = REPO_ROOT / "k8s" / "versions.yml"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_K3S = re.compile(r"^v\d+\.\d+\.\d+\+k3s\d+$")
_FLOATING = {"latest", "stable", "main", "master", "head", "*"}
_TOP_KEYS = {"k3s", "repos", "charts", "binaries", "dashboards", "release"}
_REPO_KEYS = {"url", "note"}
_CHART_KEYS = {"repo", "version", "bundled", "parent", "name"}
_ROW_KEYS = {"type", "software", "version", "chart", "binary", "notes"}
_BINARY_KEYS = {"version", "url", "sha256", "sha256_url"}
_DASHBOARD_KEYS = {"gnet_id", "revision"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ARCH = re.compile(r"^[a-z0-9]+$")


class VersionsError(Exception):
    """A versions file that cannot be used; the message is one line that says what to fix."""


@dataclass(frozen=True)
class Chart:
    """A pinned Helm chart: `helm install ... <repo>/<name> --version <version>` (repo None: not installable)."""

    repo: str | None
    name: str
    version: str
    url: str | None = None
    bundled: str | None = None
    parent: str | None = None

    @property
    def ref(self) -> str:
        """`repo/name`, as helm wants it."""
        return f"{self.repo}/{self.name}" if self.repo else self.name

    @property
    def installable(self) -> bool:
        """True when picluster installs it with helm (not bundled in K3S, not a subchart)."""
        return self.repo is not None and self.bundled is None and self.parent is None

    @property
    def label(self) -> str:
        """`name-version`, as the release table and ../shared/charts/ name it."""
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Binary:
    """A pinned vendor binary for the hosts: where each architecture's build is and how to check it."""

    name: str
    version: str
    url_template: str
    sha256: dict[str, str]          # dpkg architecture -> hex digest, pinned here
    sha256_url_template: str = ""   # or the vendor's checksum file ("{url}" = the build's url)

    def url(self, arch: str) -> str:
        """The download URL of the build for `arch` (a dpkg architecture such as arm64)."""
        return self.url_template.format(version=self.version, arch=arch)

    def sha256_url(self, arch: str) -> str:
        """The vendor's checksum file for `arch`, or "" when the digest is pinned here."""
        if not self.sha256_url_template:
            return ""
        return self.sha256_url_template.format(url=self.url(arch), version=self.version, arch=arch)


@dataclass(frozen=True)
class GrafanaDashboard:
    """A dashboard published on grafana.com, pinned by its id and revision."""

    name: str
    gnet_id: int
    revision: int

    @property
    def label(self) -> str:
        return f"grafana.com {self.gnet_id} revision {self.revision}"


@dataclass(frozen=True)
class Row:
    """One row of the release table."""

    type: str
    software: str
    version: str
    chart: Chart | None = None
    notes: str = ""
    binary: Binary | None = None


@dataclass(frozen=True)
class Versions:
    """The whole versions file, validated."""

    path: Path
    k3s: str
    repos: dict[str, str]
    repo_notes: dict[str, str]
    charts: dict[str, Chart]
    release: tuple[Row, ...]
    binaries: dict[str, Binary]
    dashboards: dict[str, GrafanaDashboard]

    def chart(self, name: str) -> Chart:
        """The pinned chart called `name`; KeyError-free: a VersionsError names the known charts."""
        try:
            return self.charts[name]
        except KeyError:
            raise VersionsError(f"{self.path}: charts.{name}: no such chart; known: "
                                f"{', '.join(sorted(self.charts))}") from None

    def binary(self, name: str) -> Binary:
        """The pinned binary called `name`; a VersionsError names the known ones."""
        try:
            return self.binaries[name]
        except KeyError:
            raise VersionsError(f"{self.path}: binaries.{name}: no such binary; known: "
                                f"{', '.join(sorted(self.binaries))}") from None

    def extra_charts(self) -> list[Chart]:
        """Pinned charts that no release-table row names (e.g. linkerd-viz), in file order."""
        used = [row.chart for row in self.release if row.chart]
        return [c for c in self.charts.values() if c not in used]


class _Reader:
    """Typed access to the raw YAML that fails with the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> VersionsError:
        return VersionsError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k),
                                f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return value

    def text(self, value: Any, key: str, *, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if isinstance(value, bool) or not isinstance(value, str) or not value.strip():
            if isinstance(value, int | float) and not isinstance(value, bool):
                raise self.fail(key, f"expected a string, got the number {value!r}; quote it: \"{value}\"")
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def version(self, value: Any, key: str) -> str:
        v = self.text(value, key)
        if v.lower() in _FLOATING:
            raise self.fail(key, f"{v!r} is not a pinned version; write the exact version")
        return v


def load_versions(path: str | Path = DEFAULT_VERSIONS) -> Versions:
    """Read and validate a versions file; raise VersionsError (one line) on the first problem."""
    path = Path(path)
    r = _Reader(path)
    raw = read_yaml(path, "versions", VersionsError)
    top = r.mapping(raw, "", _TOP_KEYS)
    for key in sorted(_TOP_KEYS):
        if key not in top:
            raise r.fail(key, "missing")

    k3s = r.version(top["k3s"], "k3s")
    if not _K3S.match(k3s):
        raise r.fail("k3s", f"{k3s!r} is not a K3S release such as v1.24.3+k3s1")

    repos: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name, spec in r.mapping(top["repos"], "repos", set(top["repos"] or {})).items():
        key = f"repos.{name}"
        if not _NAME.match(str(name)):
            raise r.fail(key, "a repo name is lowercase letters, digits and dashes")
        spec = r.mapping(spec, key, _REPO_KEYS)
        url = r.text(spec.get("url"), f"{key}.url")
        if not url.startswith("https://"):
            raise r.fail(f"{key}.url", f"{url!r} is not an https:// URL")
        repos[name] = url
        if spec.get("note"):
            notes[name] = r.text(spec["note"], f"{key}.note")

    charts: dict[str, Chart] = {}
    raw_charts = r.mapping(top["charts"], "charts", set(top["charts"] or {}))
    for name, spec in raw_charts.items():
        key = f"charts.{name}"
        if not _NAME.match(str(name)):
            raise r.fail(key, "a chart name is lowercase letters, digits and dashes")
        spec = r.mapping(spec, key, _CHART_KEYS)
        version = r.version(spec.get("version"), f"{key}.version")
        parent = spec.get("parent")
        repo = spec.get("repo")
        if (parent is None) == (repo is None):
            raise r.fail(key, "give exactly one of repo (a Helm repo name) or parent (the chart that pins it)")
        if repo is not None and repo not in repos:
            raise r.fail(f"{key}.repo", f"unknown repo {repo!r}; known: {', '.join(sorted(repos))}")
        if parent is not None and parent not in raw_charts:
            raise r.fail(f"{key}.parent", f"unknown chart {parent!r}")
        bundled = spec.get("bundled")
        if bundled is not None and bundled != "k3s":
            raise r.fail(f"{key}.bundled", f"{bundled!r}: the only bundler known is k3s")
        charts[name] = Chart(repo=repo, name=r.text(spec.get("name", name), f"{key}.name"), version=version,
                             url=repos.get(repo) if repo else None, bundled=bundled, parent=parent)

    binaries = {name: _binary(r, name, spec)
                for name, spec in r.mapping(top["binaries"], "binaries", set(top["binaries"] or {})).items()}

    dashboards: dict[str, GrafanaDashboard] = {}
    for name, spec in r.mapping(top["dashboards"], "dashboards", set(top["dashboards"] or {})).items():
        key = f"dashboards.{name}"
        if not _NAME.match(str(name)):
            raise r.fail(key, "a dashboard name is lowercase letters, digits and dashes")
        spec = r.mapping(spec, key, _DASHBOARD_KEYS)
        ids = {k: spec.get(k) for k in sorted(_DASHBOARD_KEYS)}
        for k, v in ids.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise r.fail(f"{key}.{k}", f"expected a positive whole number, got {v!r}")
        dashboards[str(name)] = GrafanaDashboard(str(name), spec["gnet_id"], spec["revision"])

    rows: list[Row] = []
    raw_rows = top["release"]
    if not isinstance(raw_rows, list) or not raw_rows:
        raise r.fail("release", "expected a non-empty list of rows")
    for i, spec in enumerate(raw_rows):
        key = f"release[{i}]"
        spec = r.mapping(spec, key, _ROW_KEYS)
        chart_name = spec.get("chart")
        if chart_name is not None and chart_name not in charts:
            raise r.fail(f"{key}.chart", f"unknown chart {chart_name!r}; add it under charts")
        binary_name = spec.get("binary")
        if binary_name is not None and binary_name not in binaries:
            raise r.fail(f"{key}.binary", f"unknown binary {binary_name!r}; add it under binaries")
        if binary_name is not None and binaries[binary_name].version != str(spec.get("version")):
            raise r.fail(f"{key}.version", f"{spec.get('version')!r} is not binaries.{binary_name}.version "
                                           f"{binaries[binary_name].version!r}; make them one")
        rows.append(Row(type=r.text(spec.get("type"), f"{key}.type"),
                        software=r.text(spec.get("software"), f"{key}.software"),
                        version=r.version(spec.get("version"), f"{key}.version"),
                        chart=charts[chart_name] if chart_name is not None else None,
                        notes=r.text(spec.get("notes"), f"{key}.notes", required=False),
                        binary=binaries[binary_name] if binary_name is not None else None))

    k3s_rows = [row for row in rows if row.software == "K3S"]
    if len(k3s_rows) != 1:
        raise r.fail("release", f"expected exactly one K3S row, found {len(k3s_rows)}")
    if not k3s.startswith(k3s_rows[0].version + "+"):
        raise r.fail("k3s", f"{k3s} is not a build of the release table's K3S {k3s_rows[0].version}")
    return Versions(path=path, k3s=k3s, repos=repos, repo_notes=notes, charts=charts, release=tuple(rows),
                    binaries=binaries, dashboards=dashboards)


def _binary(r: _Reader, name: Any, spec: Any) -> Binary:
    key = f"binaries.{name}"
    if not _NAME.match(str(name)):
        raise r.fail(key, "a binary name is lowercase letters, digits and dashes")
    spec = r.mapping(spec, key, _BINARY_KEYS)
    version = r.version(spec.get("version"), f"{key}.version")
    url = r.text(spec.get("url"), f"{key}.url")
    if not url.startswith("https://"):
        raise r.fail(f"{key}.url", f"{url!r} is not an https:// URL")
    if "{arch}" not in url:
        raise r.fail(f"{key}.url", "has no {arch}: every architecture would get the same build")
    sums: dict[str, str] = {}
    for arch, digest in r.mapping(spec.get("sha256", {}), f"{key}.sha256", set(spec.get("sha256") or {})).items():
        if not _ARCH.match(str(arch)):
            raise r.fail(f"{key}.sha256.{arch}", "not a dpkg architecture such as arm64")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise r.fail(f"{key}.sha256.{arch}", "expected 64 lowercase hex digits")
        sums[str(arch)] = digest
    sum_url = r.text(spec.get("sha256_url"), f"{key}.sha256_url", required=False)
    if bool(sums) == bool(sum_url):
        raise r.fail(key, "give exactly one of sha256 (digests per architecture) or sha256_url (the vendor's file)")
    binary = Binary(name=str(name), version=version, url_template=url, sha256=sums, sha256_url_template=sum_url)
    try:
        binary.url("arm64"), binary.sha256_url("arm64")
    except (KeyError, IndexError, ValueError) as err:
        raise r.fail(key, f"a url has a placeholder other than {{version}}, {{arch}} and {{url}}: {err}") from None
    return binary


@cache
def _default() -> Versions:
    return load_versions(DEFAULT_VERSIONS)


def k3s_version() -> str:
    """The pinned K3S release for INSTALL_K3S_VERSION, e.g. v1.24.3+k3s1."""
    return _default().k3s


def chart(name: str) -> Chart:
    """The pinned chart `name` (e.g. "metallb") from k8s/versions.yml."""
    return _default().chart(name)


def binary(name: str) -> Binary:
    """The pinned host binary `name` (e.g. "restic") from k8s/versions.yml."""
    return _default().binary(name)


def repo_url(name: str) -> str:
    """The URL of the Helm repo `name` (e.g. "jetstack") from k8s/versions.yml."""
    versions = _default()
    try:
        return versions.repos[name]
    except KeyError:
        raise VersionsError(f"{versions.path}: repos.{name}: no such repo; known: "
                            f"{', '.join(sorted(versions.repos))}") from None
