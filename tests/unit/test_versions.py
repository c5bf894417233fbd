"""k8s/versions.yml: the seed's release table as data, its lookups, its validation, `invoke versions`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from yaml_support import assert_refused, hostile

from picluster.versions import Chart, VersionsError, chart, k3s_version, load_versions, repo_url

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SEED = SHARED / "seed" / "release-v1.4.md"
CHARTS = SHARED / "charts"
VERSIONS = REPO / "k8s" / "versions.yml"


def seed_rows() -> list[list[str]]:
    """The release table of the seed post: [type, software, version, notes] per row."""
    if not SEED.exists():
        pytest.skip(f"{SEED} is absent: the seed release post lives in the shared folder next to the repo")
    rows = []
    for line in SEED.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if len(cells) == 4 and cells[0] != "Type" and not cells[0].startswith("-"):
            rows.append(cells)
    return rows


def plain_notes(notes: str) -> list[str]:
    """The seed's notes without the chart-version phrases, markdown links as `text (url)`."""
    notes = re.sub(r"\[([^]]+)\]\(([^)]+)\)", r"\1 (\2)", notes)
    parts = [p.strip() for p in re.split(r"\.\s+|\.$", notes) if p.strip()]
    return [re.sub(r"^Helm chart: \S+ ", "", p) for p in parts if not re.match(r"^Helm chart version", p)]


def test_lookups() -> None:
    assert k3s_version() == "v1.24.3+k3s1"
    assert chart("metallb") == Chart(repo="metallb", name="metallb", version="0.13.4",
                                     url="https://metallb.github.io/metallb")
    assert chart("cert-manager").ref == "jetstack/cert-manager" and chart("cert-manager").version == "v1.9.1"
    assert chart("traefik").bundled == "k3s" and not chart("traefik").installable
    assert chart("grafana").parent == "kube-prometheus-stack" and chart("grafana").repo is None
    assert repo_url("vmware-tanzu") == "https://vmware-tanzu.github.io/helm-charts"
    with pytest.raises(VersionsError, match=r"charts\.metalb: no such chart; known: cert-manager, "):
        chart("metalb")


# Where the seed's notes name a chart that the pinned release does not ship, and why ours differs.
SEED_CHART_ERRATA = {
    # K3S v1.24.3+k3s1's manifests/traefik.yaml deploys traefik-10.19.300 (upstream 10.19.3, Traefik 2.6.2: the
    # table's own version); 10.14.100 was the chart of earlier K3S releases (Traefik 2.6.0/2.6.1)
    "Traefik": ("traefik-10.14.100", "traefik-10.19.300"),
}


def test_every_row_of_the_seed_table_is_there_in_order() -> None:
    ours = load_versions().release
    rows = seed_rows()
    assert len(rows) == len(ours) == 29
    for (typ, software, version, notes), row in zip(rows, ours, strict=True):
        assert (row.type, row.software, row.version) == (typ, software, version)
        if "chart" in notes.lower():                   # the seed names a chart: ours pins that version
            assert row.chart is not None, f"{software}: the seed names a chart ({notes})"
            if software in SEED_CHART_ERRATA:
                seed_says, pinned = SEED_CHART_ERRATA[software]
                assert seed_says in notes and row.chart.label == pinned, software
            else:
                assert row.chart.version in notes, f"{software}: {row.chart.label} vs {notes!r}"
        else:
            assert row.chart is None, software
        assert ". ".join(plain_notes(notes)) == row.notes, software


def test_every_repo_the_apps_stage_needs_is_there() -> None:
    v = load_versions()
    assert set(v.repos) >= {"metallb", "jetstack", "linkerd", "traefik", "longhorn", "elastic", "fluent",
                            "prometheus-community", "vmware-tanzu"}
    assert v.repos["metallb"] == "https://metallb.github.io/metallb"
    assert "K3S-bundled" in v.repo_notes["traefik"]
    assert all(c.url == v.repos[c.repo] for c in v.charts.values() if c.repo)


def test_every_pinned_chart_has_its_upstream_defaults() -> None:
    """../shared/charts/<chart>-<version>/values.yaml exists for every pinned chart.

    A chart K3S repackages is found by its upstream version (traefik-10.19.300 -> traefik-10.19.3); linkerd's
    hold the git placeholders, and are still there.
    """
    if not CHARTS.is_dir():
        pytest.skip(f"{CHARTS} is absent: the chart defaults live in the shared folder next to the repo")
    missing = [c.upstream_label for c in load_versions().charts.values()
               if not (CHARTS / c.upstream_label / "values.yaml").is_file()]
    assert missing == []


def write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(VERSIONS.read_text())
    mutate(data)
    path = tmp_path / "versions.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["charts"]["metallb"].update(version="latest"),
     "charts.metallb.version: 'latest' is not a pinned version; write the exact version"),
    (lambda d: d["release"][2].update(version=21.4),
     "release[2].version: expected a string, got the number 21.4; quote it: \"21.4\""),
    (lambda d: d["release"][9].update(chart="metalb"), "release[9].chart: unknown chart 'metalb'; add it under charts"),
    (lambda d: d["charts"]["velero"].update(repo="tanzu"), "charts.velero.repo: unknown repo 'tanzu'; known: "),
    (lambda d: d.update(k3s="v1.25.0+k3s1"), "k3s: v1.25.0+k3s1 is not a build of the release table's K3S v1.24.3"),
    (lambda d: d.update(k3s="1.24.3"), "k3s: '1.24.3' is not a K3S release such as v1.24.3+k3s1"),
    (lambda d: d["repos"]["fluent"].update(url="http://fluent.github.io/helm-charts"), "repos.fluent.url: "),
    (lambda d: d["charts"]["fluentd"].update(chart_version="1"), "charts.fluentd.chart_version: unknown key"),
    (lambda d: d["charts"]["fluentd"].update(upstream="0.3.9"),
     "charts.fluentd.upstream: only a repackaged (bundled) chart has an upstream version"),
    (lambda d: d["binaries"]["helm"].update(where="laptop"),
     "binaries.helm.where: 'laptop': expected one of hosts, controller"),
    (lambda d: d.pop("repos"), "repos: missing"),
    (lambda d: d["release"][27].update(version="0.12.2"),
     "release[27].version: '0.12.2' is not binaries.restic.version '0.12.1'; make them one"),
    (lambda d: d["binaries"]["restic"].update(sha256_url="{url}.sum"),
     "binaries.restic.sha256_url: a checksum fetched from the download site proves nothing"),
    (lambda d: d["binaries"]["restic"]["sha256"].update(arm64="c7e5"),
     "binaries.restic.sha256.arm64: expected 64 lowercase hex digits"),
    (lambda d: d["binaries"]["mc"].update(url="https://dl.min.io/mc.{version}"), "binaries.mc.url: has no {arch}"),
    (lambda d: d["binaries"]["mc"].update(url="https://dl.min.io/{arch}/{os}"),
     "binaries.mc: a url has a placeholder other than {version}, {arch} and {url}: 'os'"),
    (lambda d: d["dashboards"]["velero"].update(revision="latest"),
     "dashboards.velero.revision: expected a positive whole number, got 'latest'"),
    (lambda d: d["dashboards"]["velero"].pop("gnet_id"), "dashboards.velero.gnet_id: expected a positive whole number"),
    (lambda d: d["release"][26].update(binary="minio-server"),
     "release[26].binary: unknown binary 'minio-server'; add it under binaries"),
    (lambda d: d.update(repos=[{"name": "fluent"}]), "repos: expected a mapping, got list"),
    (lambda d: d["binaries"]["restic"].update(sha256=[{"arm64": "c7e5"}]),
     "binaries.restic.sha256: expected a mapping, got list"),
])
def test_problems_are_one_line_naming_the_key(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, mutate)
    with pytest.raises(VersionsError) as err:
        load_versions(path)
    assert str(err.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(err.value)


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("invoke")), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_invoke_versions_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, lambda d: d["charts"]["longhorn"].update(version="latest"))
    out = invoke("versions", "--file", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {path}: charts.longhorn.version: 'latest' is not a pinned version; "
                                  "write the exact version")


def test_invoke_versions_prints_the_release_table() -> None:
    out = invoke("versions", "--repos")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "K3S pinned at v1.24.3+k3s1" in text
    for needle in ("Metal LB", "metallb-0.13.4", "cert-manager-v1.9.1", "traefik-10.19.300 (k3s-bundled)",
                   "RELEASE.2022-05-04T07-45-27Z", "https://charts.jetstack.io", "linkerd-viz-2.11.4",
                   "(restic binary)", "restic/releases/download/v0.12.1/", "sha256 pinned for amd64, arm64",
                   "no sha256 pinned: refused"):
        assert needle in text
    assert re.search(r"Velero\s+│\s+1\.9\.0\s+│\s+velero-2\.30\.1", text)


@hostile("content, expected")
def test_a_hostile_file_is_refused_in_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    assert_refused(load_versions, tmp_path / "versions.yml", content, expected, VersionsError)
