"""fluentd and fluent-bit as their daemons read them: the chart's defaults with our values, assembled.

fluentd: see fluentd_assembly (the files the chart mounts, followed from FLUENTD_CONF through every @include);
fluentd refuses to start on a plugin @id used twice or a port bound twice, and helm --atomic rolls back.
fluent-bit: the `config` sections of our values, the file the chart writes as fluent-bit.conf.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fluentd_assembly import CHART_DEFAULTS, FluentdConfigError, assemble, check, effective_values, plugins, pod_files

from picluster.inventory import load_inventory
from picluster.stages.apps.render import Renderer
from picluster.stages.apps.spec import load_releases
from picluster.versions import REPO_ROOT

pytestmark = pytest.mark.skipif(not CHART_DEFAULTS.is_file(), reason=f"{CHART_DEFAULTS} is absent")


def rendered_values(release: str) -> dict[str, Any]:
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    renderer = Renderer(inv, load_releases(), secret=lambda name: f"<secret {name}>", pki=None)
    return renderer.render(load_releases().get(release)).values


def test_fluentd_starts_one_plugin_per_id_and_one_source_per_port() -> None:
    found = assemble(rendered_values("fluentd"))
    sources = {(p.type, p.port) for p in found if p.section == "source"}
    assert sources == {("forward", 24224), ("prometheus", 24231), ("prometheus_monitor", None),
                       ("prometheus_output_monitor", None)}
    ids = [p.id for p in found if p.id]
    assert sorted(ids) == ["ignore_fluent_logs", "in_prometheus", "in_prometheus_monitor",
                           "in_prometheus_output_monitor"]
    (metrics,) = [p for p in found if p.type == "prometheus" and p.section == "source"]
    assert metrics.where.startswith("/etc/fluent/fluentd-prometheus-conf.d/prometheus.conf:")   # the chart's


def test_the_chart_default_prometheus_source_with_ours_again_is_refused() -> None:
    """What k8s/fluentd/values.yml did before: the chart's in_prometheus plus our own copy of it."""
    ours = rendered_values("fluentd")
    again = ('<source>\n  @type prometheus\n  @id in_prometheus\n  bind "0.0.0.0"\n  port 24231\n'
             '  metrics_path "/metrics"\n</source>\n')
    ours["fileConfigs"]["01_sources.conf"] += "\n" + again
    with pytest.raises(FluentdConfigError, match=r"^duplicate plugin @id in_prometheus: "
                                                 r"/etc/fluent/config.d/01_sources.conf:\d+ and "
                                                 r"/etc/fluent/fluentd-prometheus-conf.d/prometheus.conf:1$"):
        assemble(ours)
    ours["fileConfigs"]["01_sources.conf"] = ours["fileConfigs"]["01_sources.conf"].replace(
        "@id in_prometheus\n", "@id in_metrics\n")
    with pytest.raises(FluentdConfigError, match=r"^port 24231 bound twice: "):
        assemble(ours)


def test_a_forward_source_without_a_port_binds_its_default() -> None:
    files = {"/etc/fluent/fluent.conf": "<source>\n  @type forward\n</source>\n@include more.conf\n",
             "/etc/fluent/more.conf": "<source>\n  @type forward\n  port 24224\n</source>\n"}
    with pytest.raises(FluentdConfigError, match="port 24224 bound twice"):
        check(plugins(files, "/etc/fluent/fluent.conf"))


def test_fluent_conf_is_the_file_fluentd_reads_and_includes_every_config_file() -> None:
    values = effective_values(rendered_values("fluentd"))
    files = pod_files(values)
    assert sorted(files) == ["/etc/fluent/config.d/01_sources.conf", "/etc/fluent/config.d/02_filters.conf",
                             "/etc/fluent/config.d/03_dispatch.conf", "/etc/fluent/config.d/04_outputs.conf",
                             "/etc/fluent/fluent.conf", "/etc/fluent/fluentd-prometheus-conf.d/prometheus.conf"]
    assert files["/etc/fluent/fluent.conf"].endswith(
        "@include config.d/*.conf\n@include fluentd-prometheus-conf.d/*")


def test_the_elasticsearch_output_recovers_as_the_references() -> None:
    (es,) = [p for p in assemble(rendered_values("fluentd")) if p.type == "elasticsearch"]
    assert {k: es.params[k] for k in ("reload_connections", "reconnect_on_error", "reload_on_failure")} == {
        "reload_connections": "false", "reconnect_on_error": "true", "reload_on_failure": "true"}


def sections(conf: str) -> list[dict[str, str]]:
    """fluent-bit's classic format: one dict per [SECTION] (its kind under "[]"), keys as written."""
    out: list[dict[str, str]] = []
    for line in conf.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head = re.fullmatch(r"\[([A-Z_]+)\]", line)
        if head:
            out.append({"[]": head.group(1)})
        else:
            key, _, value = line.partition(" ")
            out[-1][key] = value.strip()
    return out


def test_fluent_bit_names_its_plugins_and_trims_merged_logs_as_the_reference() -> None:
    config = rendered_values("fluent-bit")["config"]
    inputs, filters, outputs = (sections(config[k]) for k in ("inputs", "filters", "outputs"))
    assert [(i["Alias"], i["Tag"]) for i in inputs] == [("input.kube", "kube.*"), ("input.os", "host.*")]
    assert all(i["Mem_Buf_Limit"] == "50MB" for i in inputs)
    (kube,) = [f for f in filters if f["Name"] == "kubernetes"]
    assert kube["Merge_Log_Trim"] == "On"
    assert [(o["Name"], o["Alias"]) for o in outputs] == [("forward", "output.aggregator")]


def test_the_gateways_fluent_bit_has_the_same_names_and_limits() -> None:
    from picluster.stages.gateway import fluentbit_conf

    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    conf = sections(fluentbit_conf(inv, inv.hosts["gateway"]))
    tail = [s for s in conf if s["[]"] == "INPUT" and s.get("Name") == "tail"]
    assert [(s["Alias"], s["Mem_Buf_Limit"]) for s in tail] == [("input.os", "50MB")]
    forward = [s for s in conf if s["[]"] == "OUTPUT" and s.get("Name") == "forward"]
    assert [s["Alias"] for s in forward] == ["output.aggregator"]

