"""Our values files against each chart's upstream defaults, and what they render to from an inventory.

Every key a values file sets must exist in the pinned chart's default values.yaml
(../shared/charts/<chart>-<version>/, found relative to the repository root), so a typo Helm would
silently ignore fails here. Below a few maps the charts leave free-form, any key is allowed; each such
map is listed in FREE_FORM with the reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from picluster.inventory import Inventory, load_inventory
from picluster.stages.apps import pki
from picluster.stages.apps.render import Renderer, RenderError
from picluster.stages.apps.spec import Release, load_releases
from picluster.versions import REPO_ROOT

CHARTS = REPO_ROOT.parent / "shared" / "charts"

# chart -> dotted paths (fnmatch patterns) under which the chart takes any key, and why.
FREE_FORM: dict[str, dict[str, str]] = {
    "*": {
        "podAnnotations": "pod annotations: a map of annotation names, empty ({}) in every chart",
        "*.podAnnotations": "pod annotations of a component: a map of annotation names, empty ({}) by default",
    },
    "velero": {
        "configuration.backupStorageLocation.config": "the provider's own settings (s3Url, region, ...); "
                                                      "the chart passes the map through and only comments examples",
    },
    "fluentd": {
        "fileConfigs": "one entry per configuration file, keyed by its file name",
    },
    "fluent-bit": {
        "config.extraFiles": "extra files under /fluent-bit/etc, keyed by file name",
        "luaScripts": "Lua scripts, keyed by file name",
    },
    "prometheus-elasticsearch-exporter": {
        "env": "environment variables, keyed by variable name",
        "extraEnvSecrets": "environment variables from Secrets, keyed by variable name",
    },
    "kube-prometheus-stack": {
        "alertmanager.alertmanagerSpec.storage": "the operator's StorageSpec, passed through to the CRD",
        "prometheus.prometheusSpec.storageSpec": "the operator's StorageSpec, passed through to the CRD",
    },
    "traefik": {
        "service.spec": "merged into the Service's spec as given (loadBalancerIP, ...)",
    },
    "longhorn": {
        "annotations": "annotations of the longhorn-manager DaemonSet's pods, keyed by annotation name",
    },
}
# Subcharts whose values sit under a key of the parent, checked against the subchart's own defaults.
SUBCHARTS = {"kube-prometheus-stack": ["grafana", "prometheus-node-exporter", "kube-state-metrics"]}


def unknown_keys(ours: Mapping[str, Any], defaults: Mapping[str, Any], free: Mapping[str, str],
                 prefix: str = "") -> Iterator[str]:
    """Dotted paths of keys in `ours` that `defaults` does not have (free-form maps excepted)."""
    for key, value in ours.items():
        path = f"{prefix}{key}"
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in free):
            continue
        if not isinstance(defaults, Mapping) or key not in defaults:
            yield path
            continue
        if isinstance(value, Mapping):
            below = defaults[key]
            if isinstance(below, Mapping) and below:
                yield from unknown_keys(value, below, free, path + ".")
            elif value:
                yield (f"{path}.* (the chart's default is {below!r}: nothing to check against; "
                       "list the map in FREE_FORM with the reason if it is free-form)")


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def chart_defaults(name: str) -> dict[str, Any] | None:
    versions = load_releases().versions
    chart = versions.chart(name)
    path = CHARTS / chart.upstream_label / "values.yaml"     # a K3S repackage: its upstream chart's defaults
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    for sub in SUBCHARTS.get(name, []):
        sub_path = CHARTS / versions.chart(sub).label / "values.yaml"
        if sub_path.is_file():
            data[sub] = merge(yaml.safe_load(sub_path.read_text()) or {}, data.get(sub) or {})
    return data


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory) -> pki.ServerPki:
    return pki.ensure(tmp_path_factory.mktemp("pki"), "s3.picluster.example.com", "10.0.0.11")


def renderer(inv: Inventory, server_pki: pki.ServerPki) -> Renderer:
    return Renderer(inv, load_releases(), secret=lambda name: f"<secret {name}>", pki=server_pki)


RELEASES = load_releases().ordered()
WITH_VALUES = [r for r in RELEASES if r.values]


@pytest.mark.parametrize("release", WITH_VALUES, ids=[f"{r.name}:{r.chart.label}" for r in WITH_VALUES])
def test_every_key_we_set_exists_in_the_charts_defaults(release: Release, server_pki: pki.ServerPki) -> None:
    defaults = chart_defaults(release.chart.name)
    if defaults is None:
        pytest.skip(f"no upstream defaults for {release.chart.label} under {CHARTS}: not checked")
    values = renderer(load_inventory(REPO_ROOT / "hosts/inventory.yml"), server_pki).render(release).values
    free = {**FREE_FORM["*"], **FREE_FORM.get(release.chart.name, {})}
    assert list(unknown_keys(values, defaults, free)) == []


def test_the_charts_we_could_check() -> None:
    """Says which charts were checked: all the pinned ones we set values for have their defaults here."""
    checked = sorted(r.chart.upstream_label for r in WITH_VALUES if chart_defaults(r.chart.name) is not None)
    if not CHARTS.is_dir():
        pytest.skip(f"{CHARTS} is missing: no chart could be checked")
    assert checked == sorted(r.chart.upstream_label for r in WITH_VALUES)
    assert "traefik-10.19.3" in checked          # what K3S v1.24.3+k3s1 bundles (traefik-10.19.300), not 10.14.x


def test_k3s_traefik_is_checked_against_upstream_10_19_3() -> None:
    """K3S's traefik-10.19.300 is upstream 10.19.3 repackaged; a key only 10.19.3 has passes, a typo does not."""
    traefik = load_releases().versions.chart("traefik")
    assert (traefik.label, traefik.upstream_label, traefik.bundled) == ("traefik-10.19.300", "traefik-10.19.3", "k3s")
    defaults = chart_defaults("traefik")
    assert defaults is not None
    free = {**FREE_FORM["*"], **FREE_FORM["traefik"]}
    assert list(unknown_keys({"readinessProbe": {"failureThreshold": 1}}, defaults, free)) == []   # new in 10.15+
    assert list(unknown_keys({"deployment": {"podAnnotation": {}}}, defaults, free)) == ["deployment.podAnnotation"]


def test_a_typo_is_caught_and_a_free_form_map_is_not() -> None:
    defaults = {"defaultSettings": {"defaultDataPath": None, "backupTarget": None}, "podAnnotations": {},
                "config": {"region": None}}
    ours = {"defaultSettings": {"defaultDataPth": "/storage"}, "podAnnotations": {"a": "b"}, "config": {"x": 1}}
    found = list(unknown_keys(ours, defaults, FREE_FORM["*"]))
    assert found == ["defaultSettings.defaultDataPth", "config.x"]
    (one,) = unknown_keys({"service": {"spec": {"loadBalancerIP": "1"}}}, {"service": {"spec": {}}}, FREE_FORM["*"])
    assert one.startswith("service.spec.* (the chart's default is {}")


def all_rendered(inv: Inventory, server_pki: pki.ServerPki) -> str:
    r = renderer(inv, server_pki)
    lookups = {"trust_anchor": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}
    docs = []
    for release in RELEASES:
        out = r.render(release, lookups)
        docs += [out.values, *out.before, *out.manifests, *out.secrets.values()]
    return yaml.safe_dump_all(docs)


def test_lab_addresses_and_domain_come_from_the_inventory(server_pki: pki.ServerPki) -> None:
    lab = load_inventory(REPO_ROOT / "hosts/lab.yml")
    text = all_rendered(lab, server_pki)
    assert "10.0.0." not in text and "picluster.example.com" not in text
    assert "10.250.0.100-10.250.0.200" in text                      # MetalLB pool
    assert "loadBalancerIP: 10.250.0.100" in text                   # Traefik, from services.traefik
    assert "loadBalancerIP: 10.250.0.101" in text                   # fluentd-ext, from services.fluentd
    assert "https://s3.lab.picluster.test:9091" in text
    assert "- ip: 10.250.0.1\n" in text                             # the gateway as a Prometheus target


def test_every_ingress_host_is_a_service_of_the_registry(server_pki: pki.ServerPki) -> None:
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    r = renderer(inv, server_pki)
    hosts = set()
    for release in RELEASES:
        for doc in r.render(release, {"trust_anchor": "x"}).manifests:
            if doc["kind"] == "Ingress":
                hosts |= {rule["host"] for rule in doc["spec"]["rules"]}
    registry = {f"{s}.{inv.cluster.domain}" for s in inv.cluster.services}
    assert hosts and hosts <= registry
    assert {h.split(".")[0] for h in hosts} == {"traefik", "storage", "kibana", "elasticsearch", "prometheus",
                                                 "alertmanager", "grafana", "linkerd"}


def test_an_ingress_for_a_service_missing_from_the_registry_fails(tmp_path: Path,
                                                                  server_pki: pki.ServerPki) -> None:
    data = yaml.safe_load((REPO_ROOT / "hosts/inventory.yml").read_text())
    del data["cluster"]["services"]["kibana"]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RenderError, match=r"service 'kibana' is not in cluster\.services"):
        renderer(load_inventory(path), server_pki).render(load_releases().get("elastic-operator"))


def test_secret_values_stay_out_of_values_and_manifests(server_pki: pki.ServerPki) -> None:
    r = renderer(load_inventory(REPO_ROOT / "hosts/inventory.yml"), server_pki)
    for release in RELEASES:
        out = r.render(release, {"trust_anchor": "x"})
        text = yaml.safe_dump_all([out.values, *out.before, *out.manifests])
        assert "<secret " not in text, release.name
    velero = r.render(load_releases().get("velero"))
    assert velero.secrets[("velero-system", "velero-secret")]["cloud"].splitlines()[2] == \
        "aws_secret_access_key = <secret minio_velero_password>"
    traefik = r.render(load_releases().get("traefik"))
    (hcc,) = [d for d in traefik.manifests if d["kind"] == "HelmChartConfig"]
    assert yaml.safe_load(hcc["spec"]["valuesContent"]) == traefik.values


def test_htpasswd_is_bcrypt_that_traefik_checks_and_the_same_every_run() -> None:
    import bcrypt

    from picluster.stages.apps.render import htpasswd

    line = htpasswd("admin", "s1cret0")
    user, hashed = line.split(":", 1)
    assert user == "admin" and hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(b"s1cret0", hashed.encode()) and not bcrypt.checkpw(b"other", hashed.encode())
    assert htpasswd("admin", "s1cret0") == line != htpasswd("admin", "other")


def test_the_minio_bearer_token_is_an_hs512_jwt_for_prometheus() -> None:
    import base64
    import hashlib
    import hmac
    import json

    from picluster.stages.apps.render import minio_bearer_token

    token = minio_bearer_token("minioadmin", "root-secret")
    header, claims, signature = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(header)) == {"alg": "HS512", "typ": "JWT"}
    assert json.loads(decode(claims)) == {"exp": 4102444800, "iss": "prometheus", "sub": "minioadmin"}
    expected = hmac.new(b"root-secret", f"{header}.{claims}".encode(), hashlib.sha512).digest()
    assert decode(signature) == expected
    assert minio_bearer_token("minioadmin", "root-secret") == token


def test_a_dashboard_with_a_ds_prometheus_input_gets_its_variable() -> None:
    from picluster.stages.apps.render import with_ds_prometheus

    board = {"__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource"}], "templating": {"list": []}}
    fixed = with_ds_prometheus(board)
    assert fixed["templating"]["list"][0]["name"] == "DS_PROMETHEUS"
    assert fixed["templating"]["list"][0]["type"] == "datasource" and board["templating"]["list"] == []
    assert with_ds_prometheus(fixed) == fixed
    assert with_ds_prometheus({"title": "no inputs"}) == {"title": "no inputs"}
