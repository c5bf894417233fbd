"""k8s/releases.yml: the dependency order, cycles and unknown names rejected, versions only from versions.yml."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from yaml_support import assert_refused, hostile

from picluster.stages.apps.spec import DEFAULT_RELEASES, SpecError, load_releases, topological

K8S = DEFAULT_RELEASES.parent


def test_the_reference_order_is_kept_and_respects_every_dependency() -> None:
    releases = load_releases()
    order = [r.name for r in releases.ordered()]
    # reference §4.0: metallb, certmanager, linkerd, traefik, velero, longhorn, logging, monitoring, linkerd-viz
    assert order == ["metallb", "certmanager", "linkerd2", "traefik", "velero", "longhorn", "elastic-operator",
                     "fluentd", "fluent-bit", "prometheus-elasticsearch-exporter", "kube-prometheus-stack",
                     "linkerd-viz"]
    for r in releases.releases:
        for dep in r.depends_on:
            assert order.index(dep) < order.index(r.name), f"{r.name} before its dependency {dep}"


def test_versions_come_from_versions_yml_only() -> None:
    releases = load_releases()
    assert {r.name: r.chart.version for r in releases.releases} == {
        "metallb": "0.13.4", "certmanager": "v1.9.1", "linkerd2": "2.11.4", "traefik": "10.19.300",
        "velero": "2.30.1", "longhorn": "1.3.0", "elastic-operator": "2.3.0", "fluentd": "0.3.9",
        "fluent-bit": "0.20.4", "prometheus-elasticsearch-exporter": "4.13.0", "kube-prometheus-stack": "39.1.0",
        "linkerd-viz": "2.11.4"}
    entries = yaml.safe_load(DEFAULT_RELEASES.read_text())["releases"]
    assert not any("version" in e for e in entries)
    traefik = releases.get("traefik")
    assert not traefik.helm and traefik.bundled == "k3s"


def test_only_picks_releases_in_dependency_order() -> None:
    assert [r.name for r in load_releases().ordered(["linkerd-viz", "metallb"])] == ["metallb", "linkerd-viz"]
    with pytest.raises(SpecError, match="no release named 'nope'"):
        load_releases().ordered(["nope"])


def test_topological_ties_keep_file_order() -> None:
    assert topological("f", {"c": [], "a": ["b"], "b": []}) == ["c", "b", "a"]


def test_a_cycle_is_rejected_naming_it() -> None:
    with pytest.raises(SpecError, match=r"dependency cycle: a -> b -> c -> a; remove one of these depends_on"):
        topological("releases.yml", {"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    with pytest.raises(SpecError, match="release 'a' depends on itself"):
        topological("releases.yml", {"a": ["a"]})


def test_an_unknown_dependency_is_rejected() -> None:
    with pytest.raises(SpecError, match="release 'a' depends on 'ghost', which is not a release"):
        topological("releases.yml", {"a": ["ghost"]})


def _copy(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    data = yaml.safe_load((target / "releases.yml").read_text())
    edit(data["releases"])
    (target / "releases.yml").write_text(yaml.safe_dump(data))
    return target / "releases.yml"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rs: rs[1].update(depends_on=["linkerd-viz"]),
     r"dependency cycle: certmanager -> linkerd-viz -> .* -> certmanager"),
    (lambda rs: rs[1].update(version="v1.9.1"), r"releases\[1\]\.version: unknown key"),
    (lambda rs: rs[0].update(chart="jetstack/metallb"), r"has chart metallb in repo 'metallb', not 'jetstack'"),
    (lambda rs: rs[0].update(chart="metallb/metalb"), r"charts\.metalb: no such chart"),
    (lambda rs: rs[0].update(values="metallb/nope.yml"), r"'metallb/nope.yml': no such file"),
    (lambda rs: rs[3].pop("bundled"), r"chart traefik is not installable with helm \(bundled with k3s\)"),
    (lambda rs: rs.append(copy.deepcopy(rs[0])), r"release 'metallb' is listed twice"),
    (lambda rs: rs[0].update(lookups=[{"secret": "x"}]), r"releases\[0\]\.lookups: expected a mapping, got list"),
    (lambda rs: rs[0].update(secrets={"name": "x"}), r"releases\[0\]\.secrets: expected a list, got dict"),
])
def test_a_broken_releases_file_fails_with_one_line(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match=message) as err:
        load_releases(_copy(tmp_path, edit))
    assert "\n" not in str(err.value)


@hostile("content, expected")
def test_a_hostile_file_is_refused_in_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    shutil.copy(K8S / "versions.yml", tmp_path / "versions.yml")
    assert_refused(load_releases, tmp_path / "releases.yml", content, expected, SpecError)


def test_an_unknown_top_level_key_is_named_as_written(tmp_path: Path) -> None:
    path = _copy(tmp_path, lambda rs: None)
    path.write_text(path.read_text() + "extra: 1\n")
    with pytest.raises(SpecError, match=r"releases\.yml: extra: unknown key; allowed here: releases$"):
        load_releases(path)
