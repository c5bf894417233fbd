"""Load and validate k8s/versions.yml, the one place versions are pinned.

Every problem is one `VersionsError` line naming the file and the key (`charts.metallb.version: ...`).
Lookups: `k3s_version()`, `chart("metallb")`, `repo_url("jetstack")`, `binary("restic")`; `load_versions()` gives
the whole table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from picluster.yamlfile import Checker, read_yaml

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VERSIONS = REPO_ROOT / "k8s" / "versions.yml"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_K3S = re.compile(r"^v\d+\.\d+\.\d+\+k3s\d+$")
_FLOATING = {"latest", "stable", "main", "master", "head", "*"}
_TOP_KEYS = {"k3s", "repos", "charts", "binaries", "dashboards", "release"}
_REPO_KEYS = {"url", "note"}
_CHART_KEYS = {"repo", "version", "bundled", "parent", "name", "upstream"}
_ROW_KEYS = {"type", "software", "version", "chart", "binary", "notes"}
_BINARY_KEYS = {"version", "url", "sha256", "sha256_url", "where"}
_WHERE = ("hosts", "controller")
_DASHBOARD_KEYS = {"gnet_id", "revision"}
_SCRIPT_KEYS = {"url", "sha256"}
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
    upstream: str | None = None     # the upstream chart version a repackage (K3S's) is built from

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
        """`name-version`, as the release table and helm name it."""
        return f"{self.name}-{self.version}"

    @property
    def upstream_label(self) -> str:
        """`name-<upstream version>`: the upstream chart whose defaults apply (../shared/charts/ names it so)."""
        return f"{self.name}-{self.upstream or self.version}"


@dataclass(frozen=True)
class Binary:
    """A pinned vendor binary for the hosts: where each architecture's build is and how to check it."""

    name: str
    version: str
    url_template: str
    sha256: dict[str, str]          # dpkg architecture -> hex digest, pinned here (never fetched from the site)
    sha256_url_template: str = ""   # always "": a checksum from the download site is refused when loading
    where: str = "hosts"            # or "controller": installed into the controller's tools folder

    def url(self, arch: str) -> str:
        """The download URL of the build for `arch` (a dpkg architecture such as arm64)."""
        return self.url_template.format(version=self.version, arch=arch)

    def sha256_url(self, arch: str) -> str:
        """The vendor's checksum file for `arch`, or "" when the digest is pinned here."""
        if not self.sha256_url_template:
            return ""
        return self.sha256_url_template.format(url=self.url(arch), version=self.version, arch=arch)


@dataclass(frozen=True)
class Script:
    """A pinned script a host downloads and runs (the K3S install script): its URL and its sha256."""

    name: str
    url_template: str    # {version}: the K3S version, URL-encoded (the script at that release's tag)
    sha256: str          # "" until someone pins it: a host then refuses to run it

    def url(self, version: str) -> str:
        """The script's URL at `version`."""
        return self.url_template.format(version=version.replace("+", "%2B"))


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
    scripts: dict[str, Script] = field(default_factory=dict)

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


class _Reader(Checker):
    """Typed access to the raw YAML that fails with the file and the key path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, VersionsError)

    def version(self, value: Any, key: str) -> str:
        v = self.text(value, key)
        if v.lower() in _FLOATING:
            raise self.fail(key, f"{v!r} is not a pinned version; write the exact version")
        return v

    def optional_text(self, value: Any, key: str) -> str:
        return "" if value is None else self.text(value, key)

    def named(self, value: Any, key: str, what: str) -> list[tuple[str, Any, str]]:
        """The entries of a section of named entries: (name, entry, its key path), names checked."""
        out = []
        for name, spec in self.table(value, key).items():
            if not _NAME.match(str(name)):
                raise self.fail(f"{key}.{name}", f"a {what} name is lowercase letters, digits and dashes")
            out.append((str(name), spec, f"{key}.{name}"))
        return out

    def https(self, value: Any, key: str) -> str:
        url = self.text(value, key)
        if not url.startswith("https://"):
            raise self.fail(key, f"{url!r} is not an https:// URL")
        return url


def load_versions(path: str | Path = DEFAULT_VERSIONS) -> Versions:
    """Read and validate a versions file; raise VersionsError (one line) on the first problem."""
    path = Path(path)
    r = _Reader(path)
    top = r.mapping(read_yaml(path, "versions", VersionsError), "", required=_TOP_KEYS, optional={"scripts"})
    k3s = r.version(top["k3s"], "k3s")
    if not _K3S.match(k3s):
        raise r.fail("k3s", f"{k3s!r} is not a K3S release such as v1.24.3+k3s1")
    repos, notes = _repos(r, top["repos"])
    charts = _charts(r, top["charts"], repos)
    binaries = {name: _binary(r, name, key, spec) for name, spec, key in r.named(top["binaries"], "binaries", "binary")}
    dashboards = {name: _dashboard(r, name, key, spec)
                  for name, spec, key in r.named(top["dashboards"], "dashboards", "dashboard")}
    rows = _rows(r, top["release"], charts, binaries)
    _check_k3s_row(r, k3s, rows)
    scripts = {name: _script(r, key, spec)
               for name, spec, key in r.named(top.get("scripts") or {}, "scripts", "script")}
    return Versions(path=path, k3s=k3s, repos=repos, repo_notes=notes, charts=charts, release=rows,
                    binaries=binaries, dashboards=dashboards, scripts=scripts)


def _repos(r: _Reader, data: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The Helm repos' URLs, and the notes of those that have one."""
    repos: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name, spec, key in r.named(data, "repos", "repo"):
        spec = r.mapping(spec, key, optional=_REPO_KEYS)
        repos[name] = r.https(spec.get("url"), f"{key}.url")
        if spec.get("note"):
            notes[name] = r.text(spec["note"], f"{key}.note")
    return repos, notes


def _charts(r: _Reader, data: Any, repos: dict[str, str]) -> dict[str, Chart]:
    """The pinned charts, each from a known repo or pinned by a known parent chart."""
    named = r.named(data, "charts", "chart")
    known = {name for name, _spec, _key in named}
    return {name: _chart(r, key, r.mapping(spec, key, optional=_CHART_KEYS), name, repos, known)
            for name, spec, key in named}


def _chart(r: _Reader, key: str, spec: dict[str, Any], name: str, repos: dict[str, str], charts: set[str]) -> Chart:
    version = r.version(spec.get("version"), f"{key}.version")
    parent = spec.get("parent")
    repo = spec.get("repo")
    if (parent is None) == (repo is None):
        raise r.fail(key, "give exactly one of repo (a Helm repo name) or parent (the chart that pins it)")
    if repo is not None and repo not in repos:
        raise r.fail(f"{key}.repo", f"unknown repo {repo!r}; known: {', '.join(sorted(repos))}")
    if parent is not None and parent not in charts:
        raise r.fail(f"{key}.parent", f"unknown chart {parent!r}")
    bundled = spec.get("bundled")
    if bundled is not None and bundled != "k3s":
        raise r.fail(f"{key}.bundled", f"{bundled!r}: the only bundler known is k3s")
    upstream = spec.get("upstream")
    if upstream is not None:
        upstream = r.version(upstream, f"{key}.upstream")
        if bundled is None:
            raise r.fail(f"{key}.upstream", "only a repackaged (bundled) chart has an upstream version")
    return Chart(repo=repo, name=r.text(spec.get("name", name), f"{key}.name"), version=version,
                 url=repos.get(repo) if repo else None, bundled=bundled, parent=parent, upstream=upstream)


def _binary(r: _Reader, name: str, key: str, spec: Any) -> Binary:
    spec = r.mapping(spec, key, optional=_BINARY_KEYS)
    version = r.version(spec.get("version"), f"{key}.version")
    url = r.https(spec.get("url"), f"{key}.url")
    if "{arch}" not in url:
        raise r.fail(f"{key}.url", "has no {arch}: every architecture would get the same build")
    if spec.get("sha256_url") is not None:
        raise r.fail(f"{key}.sha256_url", "a checksum fetched from the download site proves nothing; pin sha256 "
                                          "per architecture instead, confirmed from two independent sources")
    sums = _digests(r, spec.get("sha256", {}), f"{key}.sha256")
    where = spec.get("where", "hosts")
    if where not in _WHERE:
        raise r.fail(f"{key}.where", f"{where!r}: expected one of {', '.join(_WHERE)}")
    binary = Binary(name=name, version=version, url_template=url, sha256=sums, where=where)
    try:
        binary.url("arm64"), binary.sha256_url("arm64")
    except (KeyError, IndexError, ValueError) as err:
        raise r.fail(key, f"a url has a placeholder other than {{version}}, {{arch}} and {{url}}: {err}") from None
    return binary


def _script(r: _Reader, key: str, spec: Any) -> Script:
    spec = r.mapping(spec, key, required={"url"}, optional=_SCRIPT_KEYS)
    url = r.https(spec["url"], f"{key}.url")
    digest = r.optional_text(spec.get("sha256"), f"{key}.sha256")
    if digest and not _SHA256.match(digest):
        raise r.fail(f"{key}.sha256", "expected 64 lowercase hex digits")
    try:
        url.format(version="v1")
    except (KeyError, IndexError, ValueError) as err:
        raise r.fail(f"{key}.url", f"a placeholder other than {{version}}: {err}") from None
    return Script(name=key.rsplit(".", 1)[-1], url_template=url, sha256=digest)


def _digests(r: _Reader, data: Any, key: str) -> dict[str, str]:
    """A binary's pinned sha256 digests, per dpkg architecture."""
    sums: dict[str, str] = {}
    for arch, digest in r.table(data, key).items():
        if not _ARCH.match(str(arch)):
            raise r.fail(f"{key}.{arch}", "not a dpkg architecture such as arm64")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise r.fail(f"{key}.{arch}", "expected 64 lowercase hex digits")
        sums[str(arch)] = digest
    return sums


def _dashboard(r: _Reader, name: str, key: str, spec: Any) -> GrafanaDashboard:
    spec = r.mapping(spec, key, optional=_DASHBOARD_KEYS)
    for k in sorted(_DASHBOARD_KEYS):
        v = spec.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise r.fail(f"{key}.{k}", f"expected a positive whole number, got {v!r}")
    return GrafanaDashboard(name, spec["gnet_id"], spec["revision"])


def _rows(r: _Reader, data: Any, charts: dict[str, Chart], binaries: dict[str, Binary]) -> tuple[Row, ...]:
    """The release table: a non-empty list of rows naming known charts and binaries."""
    if not isinstance(data, list) or not data:
        raise r.fail("release", "expected a non-empty list of rows")
    return r.items(data, "release", lambda spec, key: _row(r, spec, key, charts, binaries))


def _row(r: _Reader, spec: Any, key: str, charts: dict[str, Chart], binaries: dict[str, Binary]) -> Row:
    spec = r.mapping(spec, key, optional=_ROW_KEYS)
    chart_name = spec.get("chart")
    if chart_name is not None and chart_name not in charts:
        raise r.fail(f"{key}.chart", f"unknown chart {chart_name!r}; add it under charts")
    binary_name = spec.get("binary")
    if binary_name is not None and binary_name not in binaries:
        raise r.fail(f"{key}.binary", f"unknown binary {binary_name!r}; add it under binaries")
    if binary_name is not None and binaries[binary_name].version != str(spec.get("version")):
        raise r.fail(f"{key}.version", f"{spec.get('version')!r} is not binaries.{binary_name}.version "
                                       f"{binaries[binary_name].version!r}; make them one")
    return Row(type=r.text(spec.get("type"), f"{key}.type"),
               software=r.text(spec.get("software"), f"{key}.software"),
               version=r.version(spec.get("version"), f"{key}.version"),
               chart=charts[chart_name] if chart_name is not None else None,
               notes=r.optional_text(spec.get("notes"), f"{key}.notes"),
               binary=binaries[binary_name] if binary_name is not None else None)


def _check_k3s_row(r: _Reader, k3s: str, rows: tuple[Row, ...]) -> None:
    """The table has one K3S row, and the pinned build is of its release."""
    k3s_rows = [row for row in rows if row.software == "K3S"]
    if len(k3s_rows) != 1:
        raise r.fail("release", f"expected exactly one K3S row, found {len(k3s_rows)}")
    if not k3s.startswith(k3s_rows[0].version + "+"):
        raise r.fail("k3s", f"{k3s} is not a build of the release table's K3S {k3s_rows[0].version}")


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


def script(name: str) -> Script:
    """The pinned script `name` (e.g. "k3s-install") from k8s/versions.yml; its sha256 is "" until pinned."""
    versions = _default()
    return _named(versions.scripts, name, f"{versions.path}: scripts", "script")


def repo_url(name: str) -> str:
    """The URL of the Helm repo `name` (e.g. "jetstack") from k8s/versions.yml."""
    versions = _default()
    return _named(versions.repos, name, f"{versions.path}: repos", "repo")


def _named(table: Mapping[str, T], name: str, where: str, what: str) -> T:
    """`table[name]`, or a VersionsError naming the known ones."""
    try:
        return table[name]
    except KeyError:
        raise VersionsError(f"{where}.{name}: no such {what}; known: {', '.join(sorted(table)) or 'none'}") from None
