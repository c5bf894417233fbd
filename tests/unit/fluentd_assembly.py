"""fluentd's effective configuration, assembled the way the fluentd chart (0.3.9) assembles it in the pod.

The chart's defaults (../shared/charts/fluentd-0.3.9/values.yaml) are merged with our values as helm merges
them (maps key by key, lists and scalars replaced). The pod's files are then what the chart mounts:

- ConfigMap `fluentd-main` holds `fluent.conf` (templates/fluentd-configurations-cm.yaml at fluentd-0.3.9,
  reproduced in MAIN_CONF below): it nulls @FLUENT_LOG, includes `config.d/*.conf`, then one
  `@include <name>.d/*` per entry of `configMapConfigs`;
- ConfigMap `fluentd-config` holds every `fileConfigs` entry;
- each `configMapConfigs` entry is its own ConfigMap, mounted at /etc/fluent/<name>.d (templates/_pod.tpl);
  the chart's default `fluentd-prometheus-conf` (templates/files.conf/prometheus.yaml, PROMETHEUS_CONF below)
  carries the `prometheus` source `in_prometheus` on port 24231.

`volumes`/`volumeMounts` of the merged values say which ConfigMap is mounted where; FLUENTD_CONF (relative to
/fluentd/etc, as the image's entrypoint reads it) names the file fluentd starts from. `plugins()` then lists
every plugin (<source>, <match>, <filter>) fluentd would start, with its @id and the port it binds.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from picluster.versions import REPO_ROOT

CHART_DEFAULTS = REPO_ROOT.parent / "shared" / "charts" / "fluentd-0.3.9" / "values.yaml"

# templates/fluentd-configurations-cm.yaml (fluentd-0.3.9): the main file; {includes} = one line per configMapConfigs
MAIN_CONF = """\
# do not collect fluentd logs to avoid infinite loops.
<label @FLUENT_LOG>
  <match **>
    @type null
    @id ignore_fluent_logs
  </match>
</label>

@include config.d/*.conf{includes}"""

# templates/files.conf/prometheus.yaml (fluentd-0.3.9): ConfigMap fluentd-prometheus-conf
PROMETHEUS_CONF = """\
<source>
  @type prometheus
  @id in_prometheus
  bind "0.0.0.0"
  port 24231
  metrics_path "/metrics"
</source>

<source>
  @type prometheus_monitor
  @id in_prometheus_monitor
</source>

<source>
  @type prometheus_output_monitor
  @id in_prometheus_output_monitor
</source>"""

CHART_CONFIGMAPS = {"fluentd-prometheus-conf": {"prometheus.conf": PROMETHEUS_CONF}}

# The port a source binds when its configuration names none (each plugin's documented default).
DEFAULT_PORTS = {"forward": 24224, "prometheus": 24231, "monitor_agent": 24220, "http": 9880, "syslog": 5140}
PLUGIN_SECTIONS = {"source", "match", "filter"}


class FluentdConfigError(Exception):
    """A configuration fluentd would refuse to start with."""


def merge(base: Any, over: Any) -> Any:
    """helm's merge of user values over chart defaults: maps key by key, anything else replaced."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return over


def effective_values(ours: Mapping[str, Any]) -> dict[str, Any]:
    defaults = yaml.safe_load(CHART_DEFAULTS.read_text(encoding="utf-8"))
    return merge(defaults, ours)


def configmaps(values: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The ConfigMaps the chart makes, by name, with their files."""
    includes = "".join(f"\n@include {name}.d/*" for name in values.get("configMapConfigs") or [])
    maps = {"fluentd-main": {"fluent.conf": MAIN_CONF.format(includes=includes)},
            "fluentd-config": dict(values.get("fileConfigs") or {})}
    for name in values.get("configMapConfigs") or []:
        maps[name] = CHART_CONFIGMAPS.get(name, {})
    return maps


def pod_files(values: Mapping[str, Any]) -> dict[str, str]:
    """Every configuration file in the fluentd container, by absolute path, as the chart mounts them."""
    maps = configmaps(values)
    volumes = {v["name"]: v["configMap"]["name"] for v in values.get("volumes") or [] if "configMap" in v}
    mounts = [(m["mountPath"], volumes[m["name"]]) for m in values.get("volumeMounts") or [] if m["name"] in volumes]
    mounts += [(f"/etc/fluent/{name}.d", name) for name in values.get("configMapConfigs") or []]
    files: dict[str, str] = {}
    for path, cm in mounts:
        for key, text in maps.get(cm, {}).items():
            files[posixpath.join(path, key)] = text
    return files


def main_file(values: Mapping[str, Any]) -> str:
    env = {e["name"]: e.get("value") for e in values.get("env") or []}
    conf = env.get("FLUENTD_CONF") or "fluent.conf"
    return posixpath.normpath(posixpath.join("/fluentd/etc", conf))


@dataclass(frozen=True)
class Plugin:
    section: str          # source | match | filter
    type: str
    id: str | None
    bind: str | None
    port: int | None
    params: dict[str, str]
    where: str            # file:line


def _include(files: Mapping[str, str], base: str, pattern: str) -> list[str]:
    target = posixpath.normpath(posixpath.join(posixpath.dirname(base), pattern))
    matched = sorted(p for p in files if fnmatch.fnmatchcase(p, target))
    if not matched and not any(ch in pattern for ch in "*?["):
        raise FluentdConfigError(f"{base}: @include {pattern}: no such file")
    return matched


def plugins(files: Mapping[str, str], start: str) -> list[Plugin]:
    """Every plugin fluentd would start from `start`, following @include as fluentd does (sorted globs)."""
    if start not in files:
        raise FluentdConfigError(f"fluentd reads {start}, which no volume provides")
    found: list[Plugin] = []
    stack: list[tuple[str, dict[str, str], str]] = []   # open sections: name, params, where

    def read(path: str, seen: tuple[str, ...]) -> None:
        if path in seen:
            raise FluentdConfigError(f"{path}: @include loop")
        for n, raw in enumerate(files[path].splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{n}"
            if line.startswith("@include "):
                for inc in _include(files, path, line.split(None, 1)[1]):
                    read(inc, (*seen, path))
                continue
            if line.startswith("</"):
                name, params, opened = stack.pop()
                if line != f"</{name}>":
                    raise FluentdConfigError(f"{where}: {line} closes <{name}> opened at {opened}")
                if name in PLUGIN_SECTIONS and not any(s[0] in PLUGIN_SECTIONS for s in stack):
                    kind = params.get("@type", "")
                    port = params.get("port")
                    bound = int(port) if port and port.isdigit() else DEFAULT_PORTS.get(kind) \
                        if name == "source" else None
                    found.append(Plugin(name, kind, params.get("@id"), params.get("bind", "0.0.0.0").strip('"'),
                                        bound, params, opened))
                continue
            section = re.fullmatch(r"<([a-z_]+)(\s+[^>]*)?>", line)
            if section:
                stack.append((section.group(1), {}, where))
                continue
            if stack:
                key, _, value = line.partition(" ")
                stack[-1][1][key] = value.strip()
        if not seen and stack:
            raise FluentdConfigError(f"<{stack[-1][0]}> opened at {stack[-1][2]} is never closed")

    read(start, ())
    return found


def check(found: list[Plugin]) -> None:
    """Raise FluentdConfigError as fluentd would: a plugin @id used twice, a port bound twice."""
    ids: dict[str, str] = {}
    ports: dict[int, str] = {}
    for p in found:
        if p.id is not None:
            if p.id in ids:
                raise FluentdConfigError(f"duplicate plugin @id {p.id}: {ids[p.id]} and {p.where}")
            ids[p.id] = p.where
        if p.section == "source" and p.port is not None:
            if p.port in ports:
                raise FluentdConfigError(f"port {p.port} bound twice: {ports[p.port]} and {p.where}")
            ports[p.port] = p.where


def assemble(ours: Mapping[str, Any]) -> list[Plugin]:
    """Our values over the chart's defaults, mounted as the chart does, read as fluentd does, checked."""
    values = effective_values(ours)
    found = plugins(pod_files(values), main_file(values))
    check(found)
    return found


def files_from_manifests(docs: list[dict[str, Any]]) -> tuple[dict[str, str], str]:
    """The pod's configuration files and the file fluentd starts from, read off rendered manifests (helm's output):
    the ConfigMaps by name, mounted where the Deployment's pod template mounts them."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    (deploy,) = [d for d in docs if d.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes") or [] if "configMap" in v}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] in volumes:
            for key, text in maps.get(volumes[mount["name"]], {}).items():
                files[posixpath.join(mount["mountPath"], key)] = text
    return files, main_file({"env": container.get("env")})
