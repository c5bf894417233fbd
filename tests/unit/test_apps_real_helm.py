"""The project's helm commands run by a real helm (v3.9.4, tests/unit/real_helm.py), wherever no cluster is needed.

- `helm template` of small charts (apps_support/charts/: the objects the pinned charts make that our values and
  patches act on) with the values file and the post-renderer exactly as the apps stage writes them for helm
  (`Applier._install`: a values file, a `--post-renderer` script running picluster.stages.apps.postrender);
- fluentd's configuration as helm itself merges the chart's defaults (../shared/charts/fluentd-0.3.9) with ours;
- `helm repo add` / `helm repo update` / the pinned `repo/chart --version` against a chart repository on 127.0.0.1;
- the exact `upgrade --install`, `list` and `get values` argv, which helm parses before it finds no cluster;
- every values file as helm reads it (Go's YAML) equal to what we rendered.

What needs a cluster (a release really installed, listed, its values read back) stays with the helm test double.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from fluentd_assembly import CHART_DEFAULTS, FluentdConfigError, check, files_from_manifests, plugins
from real_helm import RealHelm, real_helm, real_helm_binary  # noqa: F401

from picluster.inventory import load_inventory
from picluster.stages.apps.engine import Applier
from picluster.stages.apps.helm import Helm, HelmError
from picluster.stages.apps.pki import ServerPki
from picluster.stages.apps.render import Rendered, Renderer
from picluster.stages.apps.spec import Release, load_releases
from picluster.versions import REPO_ROOT

CHARTS = Path(__file__).parent / "apps_support" / "charts"
PKI = ServerPki("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                "-----BEGIN CERTIFICATE-----\nS3\n-----END CERTIFICATE-----\n", "KEY")


def rendered(name: str, edit: Any = None) -> Rendered:
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    release = load_releases().get(name)
    out = Renderer(inv, load_releases(), secret=lambda s: f"<secret {s}>", pki=PKI).render(
        release, {n: f"<lookup {n}>" for n in release.lookups})
    if edit is not None:
        edit(out.values)
    return out


@pytest.fixture
def helm_env(real_helm: RealHelm, monkeypatch: pytest.MonkeyPatch) -> RealHelm:  # noqa: F811
    """The Helm class runs helm with the process environment: keep it in the test's own folders."""
    for key, value in real_helm.env.items():
        if key.startswith("HELM_"):
            monkeypatch.setenv(key, value)
    return real_helm


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],     # nothing listens there
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    path.chmod(0o600)
    return path


class TemplateHelm(Helm):
    """The real helm, asked to `template` a local chart where the apps stage asks `upgrade --install`."""

    def __init__(self, binary: str, kubeconfig: Path, chart: Path) -> None:
        super().__init__(binary, kubeconfig)
        self.chart, self.output = chart, ""

    def upgrade_install(self, release: Release, values_file: Path | None, post_renderer: Path | None = None) -> None:
        args = ["template", release.name, str(self.chart), "--namespace", release.namespace]
        if values_file is not None:
            args += ["--values", str(values_file)]
        if post_renderer is not None:
            args += ["--post-renderer", str(post_renderer)]
        self.output = self.run(*args, timeout=120)


def template(helm: RealHelm, chart: Path, out: Rendered, kubeconfig: Path) -> list[dict[str, Any]]:
    """What `helm template` makes of `chart` with the values file and post-renderer the apps stage writes."""
    th = TemplateHelm(str(helm.path), kubeconfig, chart)
    Applier._install(SimpleNamespace(helm=th, _deployed=None), out)  # type: ignore[arg-type]
    assert th.commands[-1].split()[1:2] == ["template"]
    return [d for d in yaml.safe_load_all(th.output) if d]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_longhorn_through_the_real_post_renderer(helm_env: RealHelm, unreachable_kubeconfig: Path) -> None:
    out = rendered("longhorn")
    assert out.patches, "longhorn's patches go through helm's post-renderer"
    docs = template(helm_env, CHARTS / "longhorn", out, unreachable_kubeconfig)
    manager = by_kind(docs, "DaemonSet", "longhorn-manager")["spec"]["template"]
    (container,) = manager["spec"]["containers"]
    assert container["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                {"name": "POD_IP", "value": "0.0.0.0"}]          # patched, no valueFrom beside it
    assert manager["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    ui = by_kind(docs, "Deployment", "longhorn-ui")["spec"]["template"]["metadata"]
    assert ui["annotations"]["linkerd.io/inject"] == "enabled" and ui["labels"] == {"app": "longhorn-ui"}
    settings = by_kind(docs, "ConfigMap", "longhorn-default-setting")["data"]["default-setting.yaml"]
    assert yaml.safe_load(settings) == {"backup-target": "s3://k3s-longhorn@eu-west-1/",   # our values, via helm
                                        "backup-target-credential-secret": "minio-secret",
                                        "default-data-path": "/storage"}


def test_a_patch_the_chart_cannot_take_fails_helm_with_the_post_renderers_line(
        helm_env: RealHelm, unreachable_kubeconfig: Path) -> None:
    out = rendered("longhorn")
    out.patches[0]["metadata"]["name"] = "longhorn-gui"
    with pytest.raises(HelmError, match=r"(?s)exited 1: Error: error while running post render on files: .*"
                                        r"picluster post-renderer: DaemonSet longhorn-system/longhorn-gui is "
                                        r"not among the chart's manifests"):
        template(helm_env, CHARTS / "longhorn", out, unreachable_kubeconfig)


@pytest.fixture
def fluentd_chart(tmp_path: Path) -> Path:
    if not CHART_DEFAULTS.is_file():
        pytest.skip(f"{CHART_DEFAULTS} is absent")
    chart = tmp_path / "fluentd"
    shutil.copytree(CHARTS / "fluentd", chart)
    shutil.copy(CHART_DEFAULTS, chart / "values.yaml")             # the pinned chart's own defaults
    return chart


def test_fluentd_as_real_helm_merges_its_defaults_with_ours_starts(helm_env: RealHelm, fluentd_chart: Path,
                                                                    unreachable_kubeconfig: Path) -> None:
    docs = template(helm_env, fluentd_chart, rendered("fluentd"), unreachable_kubeconfig)
    files, start = files_from_manifests(docs)
    assert start == "/etc/fluent/fluent.conf"
    found = plugins(files, start)
    check(found)
    assert sorted((p.type, p.port) for p in found if p.section == "source" and p.port) == [
        ("forward", 24224), ("prometheus", 24231)]
    container = by_kind(docs, "Deployment", "fluentd")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "forwarder", "containerPort": 24224, "protocol": "TCP"} in container["ports"]


def test_fluentd_with_the_old_duplicate_source_is_refused(helm_env: RealHelm, fluentd_chart: Path,
                                                          unreachable_kubeconfig: Path) -> None:
    """What k8s/fluentd/values.yml held before: its own in_prometheus beside the chart's fluentd-prometheus-conf."""
    def again(values: dict[str, Any]) -> None:
        values["fileConfigs"]["01_sources.conf"] += ('\n<source>\n  @type prometheus\n  @id in_prometheus\n'
                                                     '  bind "0.0.0.0"\n  port 24231\n</source>')

    docs = template(helm_env, fluentd_chart, rendered("fluentd", again), unreachable_kubeconfig)
    with pytest.raises(FluentdConfigError, match=r"^duplicate plugin @id in_prometheus"):
        check(plugins(*files_from_manifests(docs)))


def test_the_exact_commands_parse_and_stop_only_at_the_missing_cluster(
        helm_env: RealHelm, unreachable_kubeconfig: Path, tmp_path: Path) -> None:
    """Every flag the apps stage passes is one helm knows: it fails only where it needs the cluster."""
    helm = Helm(str(helm_env.path), unreachable_kubeconfig)
    unreachable = r"Kubernetes cluster unreachable"
    with pytest.raises(HelmError, match=unreachable):
        helm.deployed()
    with pytest.raises(HelmError, match=unreachable):
        helm.values("longhorn", "longhorn-system")
    for name in ("metallb", "longhorn", "fluentd", "kube-prometheus-stack"):
        out = rendered(name)
        with pytest.raises(HelmError, match=unreachable) as err:
            Applier._install(SimpleNamespace(helm=helm, _deployed=None), out)  # type: ignore[arg-type]
        assert "unknown flag" not in str(err.value)
    upgrade = [c for c in helm.commands if " upgrade --install " in c]
    assert len(upgrade) == 4 and all("--wait --atomic --timeout 10m" in c for c in upgrade)
    assert sum("--post-renderer" in c for c in upgrade) == 1        # longhorn's patches only


@pytest.fixture
def chart_repo(helm_env: RealHelm, tmp_path: Path) -> Iterator[str]:
    """A chart repository on 127.0.0.1 serving the small longhorn chart, packaged and indexed by helm."""
    repo = tmp_path / "repo"
    repo.mkdir()
    helm_env.run("package", str(CHARTS / "longhorn"), "--destination", str(repo))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    helm_env.run("repo", "index", str(repo), "--url", url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url
    server.shutdown()


def test_repo_add_update_and_the_pinned_chart_reference(helm_env: RealHelm, chart_repo: str,
                                                        unreachable_kubeconfig: Path) -> None:
    helm = Helm(str(helm_env.path), unreachable_kubeconfig)
    release = load_releases().get("longhorn")
    helm.repo_add(release.chart.repo or "", chart_repo)
    helm.repo_add(release.chart.repo or "", chart_repo)             # --force-update: a second add is fine
    helm.repo_update()
    out = helm.run("template", release.name, release.chart.ref, "--version", release.chart.version,
                   "--namespace", release.namespace)
    assert "name: longhorn-manager" in out
    with pytest.raises(HelmError, match=r'failed to download "longhorn/longhorn" at version "9\.9\.9"'):
        helm.run("template", release.name, release.chart.ref, "--version", "9.9.9")


WITH_VALUES = [r.name for r in load_releases().ordered() if r.values and r.helm]


@pytest.mark.parametrize("name", WITH_VALUES)
def test_helm_reads_each_values_file_as_we_wrote_it(helm_env: RealHelm, unreachable_kubeconfig: Path,
                                                    name: str) -> None:
    """Go's YAML (helm) and ours agree on every values file: no yes/no/on/off, octal or float surprise."""
    out = rendered(name)
    out.patches = []                                   # the echo chart has none of the patched objects
    (cm,) = template(helm_env, CHARTS / "values-echo", out, unreachable_kubeconfig)
    assert json.loads(cm["data"]["values.json"]) == json.loads(json.dumps(out.values))
