"""Grafana dashboards: the reference's set, grafana.com downloads (a test double over real HTTP), the cache,
the DS_PROMETHEUS variable, and what a plan says instead of downloading."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from grafana_com_double import GrafanaComDouble

from picluster.inventory import load_inventory
from picluster.stages.apps import dashboards
from picluster.stages.apps.engine import renderer
from picluster.stages.apps.render import DASHBOARDS, RenderError
from picluster.stages.apps.spec import load_releases
from picluster.versions import REPO_ROOT, GrafanaDashboard, load_versions

PINNED = load_versions().dashboards
LOCAL = sorted(p.stem for p in (REPO_ROOT / "k8s" / DASHBOARDS).glob("*.json"))
# reference §4.8: the dashboards of roles/prometheus and Linkerd's (grafana.com 15474-15493), multicluster too
REFERENCE = ["elasticsearch", "fluent-bit", "k3s-controller-manager", "k3s-proxy", "k3s-scheduler", "longhorn",
             "minio", "traefik", "velero"]
LINKERD = ["top-line", "health", "kubernetes", "namespace", "deployment", "pod", "service", "route", "authority",
           "cronjob", "job", "daemonset", "replicaset", "statefulset", "replicationcontroller", "prometheus",
           "prometheus-benchmark", "multicluster"]


def test_every_dashboard_of_the_reference_is_provided_once() -> None:
    provided = [*LOCAL, *PINNED]
    assert len(provided) == len(set(provided))
    missing = [n for n in [*REFERENCE, *(f"linkerd-{d}" for d in LINKERD)] if n not in provided]
    assert missing == []


@pytest.mark.parametrize("name", LOCAL)
def test_every_own_dashboard_queries_prometheus_through_its_input(name: str) -> None:
    data = json.loads((REPO_ROOT / "k8s" / DASHBOARDS / f"{name}.json").read_text())
    assert data["uid"] == name and [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in data["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_a_download_is_cached_and_never_asked_again(tmp_path: Path, grafana_com: GrafanaComDouble) -> None:
    velero = PINNED["velero"]
    asked = len(grafana_com.asked)
    got = dashboards.fetch(tmp_path, velero)
    assert got["title"] == f"double {velero.gnet_id} r{velero.revision}"
    assert grafana_com.asked[asked:] == [f"/api/dashboards/{velero.gnet_id}/revisions/{velero.revision}/download"]
    assert json.loads((tmp_path / f"{velero.gnet_id}-r{velero.revision}.json").read_text()) == got
    assert dashboards.fetch(tmp_path, velero) == got and dashboards.cached(tmp_path, velero) == got
    assert len(grafana_com.asked) == asked + 1


def test_a_dashboard_that_cannot_be_had_is_one_line_and_nothing_is_cached(
        tmp_path: Path, grafana_com: GrafanaComDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = GrafanaDashboard("gone", 99999, 3)
    grafana_com.missing.add(99999)
    with pytest.raises(dashboards.DashboardError) as err:
        dashboards.fetch(tmp_path, gone)
    assert str(err.value).startswith(f"dashboard gone (grafana.com 99999 revision 3): cannot download "
                                     f"{grafana_com.url}/api/dashboards/99999/revisions/3/download: HTTP 404 Not Found")
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
    with socket.socket() as s:                      # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv(dashboards.SITE_ENV, f"http://127.0.0.1:{closed}")
    with pytest.raises(dashboards.DashboardError, match=r"the controller needs to reach grafana\.com"):
        dashboards.fetch(tmp_path, PINNED["minio"])
    (tmp_path / "13502-r26.json").write_text("<html>")
    with pytest.raises(dashboards.DashboardError, match=r"13502-r26.json is not JSON"):
        dashboards.cached(tmp_path, PINNED["minio"])


def configmaps(objs: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}


def test_apply_downloads_the_pinned_ones_and_a_plan_only_names_them(
        tmp_path: Path, made_pki: Path, monkeypatch: pytest.MonkeyPatch, grafana_com: GrafanaComDouble) -> None:
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))
    shutil.copytree(made_pki, tmp_path / "state" / "pki")
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    releases = load_releases()
    stack = releases.get("kube-prometheus-stack")
    asked = len(grafana_com.asked)

    plan = renderer(inv, releases, dry_run=True)
    planned = configmaps(plan.render(stack).manifests)
    assert sorted(planned) == [f"dashboard-{n}" for n in LOCAL]
    assert plan.pending_dashboards == [f"{d.name} ({d.label})" for d in PINNED.values()]
    assert len(grafana_com.asked) == asked, "a plan downloaded"

    applied = configmaps(renderer(inv, releases, dry_run=False).render(stack).manifests)
    assert sorted(applied) == sorted(f"dashboard-{n}" for n in [*LOCAL, *PINNED])
    assert len(grafana_com.asked) == asked + len(PINNED)
    top = applied["dashboard-linkerd-top-line"]
    assert top["metadata"]["labels"] == {"grafana_dashboard": "1"}
    data = json.loads(top["data"]["linkerd-top-line.json"])
    assert data["title"] == "double 15474 r4"
    assert data["templating"]["list"][0]["name"] == "DS_PROMETHEUS"        # reference issue #18
    again = renderer(inv, releases, dry_run=True)                          # now cached: a plan has them all
    assert len(configmaps(again.render(stack).manifests)) == len(LOCAL) + len(PINNED)
    assert again.pending_dashboards == []


def test_a_name_both_local_and_pinned_is_refused(tmp_path: Path, made_pki: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "k8s", base)
    (base / DASHBOARDS / "velero.json").write_text('{"title": "mine", "panels": []}')
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))
    shutil.copytree(made_pki, tmp_path / "state" / "pki")
    releases = load_releases(base / "releases.yml")
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    with pytest.raises(RenderError, match=r"dashboard velero is both a file under .* and pinned in .*: keep one"):
        renderer(inv, releases, dry_run=True).render(releases.get("kube-prometheus-stack"))
