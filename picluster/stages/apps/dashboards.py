"""Grafana dashboards pinned on grafana.com (k8s/versions.yml `dashboards`), downloaded once by the controller.

Each is fetched from `<site>/api/dashboards/<id>/revisions/<revision>/download` (site https://grafana.com, or a
mirror in $PICLUSTER_GRAFANA_COM) into `<dir>/<id>-r<revision>.json`. A published revision never changes, so
a cached file is used as it is, and a plan never downloads: it only says which are still to fetch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from picluster.localfs import write_atomic
from picluster.stages.apps import fetch as bounded
from picluster.versions import GrafanaDashboard

GRAFANA_COM = "https://grafana.com"
SITE_ENV = "PICLUSTER_GRAFANA_COM"
TIMEOUT_S = 30.0
MAX_BYTES = 16 * 1024 * 1024


class DashboardError(Exception):
    """A dashboard that cannot be had; the message names it and says what to check."""


def site() -> str:
    return (os.environ.get(SITE_ENV) or GRAFANA_COM).rstrip("/")


def download_url(d: GrafanaDashboard) -> str:
    return f"{site()}/api/dashboards/{d.gnet_id}/revisions/{d.revision}/download"


def cache_path(folder: Path, d: GrafanaDashboard) -> Path:
    return folder / f"{d.gnet_id}-r{d.revision}.json"


def _parse(d: GrafanaDashboard, raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise DashboardError(f"dashboard {d.name} ({d.label}): {where} is not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("panels", data.get("rows")), list):
        raise DashboardError(f"dashboard {d.name} ({d.label}): {where} is not a Grafana dashboard (no panels)")
    return data


def cached(folder: Path, d: GrafanaDashboard) -> dict[str, Any] | None:
    """The dashboard from the cache, or None when it was never downloaded."""
    path = cache_path(folder, d)
    if not path.is_file():
        return None
    return _parse(d, path.read_bytes(), str(path))


def fetch(folder: Path, d: GrafanaDashboard) -> dict[str, Any]:
    """The dashboard from the cache, else downloaded (bounded in time and size) and cached."""
    have = cached(folder, d)
    if have is not None:
        return have
    url = download_url(d)
    try:
        raw = bounded.fetch(url, timeout=TIMEOUT_S, max_bytes=MAX_BYTES)
    except bounded.FetchFailed as err:
        raise DashboardError(f"dashboard {d.name} ({d.label}): cannot download {url}: {err.reason}; the "
                             f"controller needs to reach grafana.com (or a mirror in ${SITE_ENV})") from None
    data = _parse(d, raw, url)
    write_atomic(cache_path(folder, d), raw)
    return data
