"""Manifests applied server-side, patches, Secrets and namespaces made, and lookups read, with the official client.

An object whose fields are all already in the live one is left alone (reported unchanged); otherwise it is
applied with server-side apply (field manager `picluster`, conflicts forced), so a re-run sends nothing.
A patch (of an object a chart made) is a strategic-merge patch, sent only when the live object lacks it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from picluster.kube.client import Kube, KubeError, is_api_error, one_line

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

FIELD_MANAGER = "picluster"
NAMESPACE_MANAGER = "picluster-namespaces"
CLUSTER_SCOPED = {"Namespace", "ClusterIssuer", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass"}
PLURALS = {"Endpoints": "endpoints", "Ingress": "ingresses", "StorageClass": "storageclasses",
           "ClusterIssuer": "clusterissuers", "HelmChartConfig": "helmchartconfigs",
           "Elasticsearch": "elasticsearches"}


def object_path(obj: Mapping[str, Any]) -> str:
    """The REST path of a manifest's object: /api/v1/... or /apis/<group>/<version>/..."""
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    meta = obj["metadata"]
    plural = PLURALS.get(kind) or kind.lower() + ("es" if kind.endswith("s") else "s")
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if kind in CLUSTER_SCOPED:
        return f"{prefix}/{plural}/{meta['name']}"
    namespace = meta.get("namespace")
    if not namespace:
        raise KubeError(f"{kind} {meta['name']}: a namespaced object needs metadata.namespace")
    return f"{prefix}/namespaces/{namespace}/{plural}/{meta['name']}"


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {ns}{meta['name']}"


def contains(want: Any, live: Any) -> bool:
    """True when every field of `want` has the same value in `live` (lists compared whole)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(k in live and contains(v, live[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(want) == len(live) and all(map(contains, want, live))
    if isinstance(want, bool) or isinstance(live, bool):
        return want is live or str(want).lower() == str(live).lower()
    return want == live or (isinstance(want, int | float | str) and str(want) == str(live))


def patched(want: Any, live: Any) -> bool:
    """True when `live` already has what the strategic-merge patch `want` sets: merging it changes nothing
    (compared both ways, so a removed key counts, and "2" is 2 as in `contains`)."""
    from picluster.stages.apps.postrender import merge

    live = _without_nulls(live)    # a null in a live object means the key is not there
    merged = merge(live, want)
    return contains(merged, live) and contains(live, merged)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _call(client: ApiClient, method: str, path: str, *, body: Any = None, content_type: str | None = None,
          query: list[tuple[str, str]] | None = None, timeout: float = 30.0) -> Any:
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    m, url, hdrs, data, _ = client.param_serialize(method, path, query_params=query or [], header_params=headers,
                                                   body=body, auth_settings=["BearerToken"])
    resp = client.call_api(m, url, header_params=hdrs, body=data, _request_timeout=timeout)
    resp.read()
    if resp.status >= 400:
        raise ApiException(http_resp=resp)
    return json.loads(resp.data) if resp.data else None


def get(kube: Kube, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live object, or None when there is none."""
    with kube.api() as client:
        try:
            return dict(_call(client, "GET", object_path(obj), timeout=kube.request_timeout))
        except Exception as err:
            if is_api_error(err, 404):
                return None
            raise KubeError(f"reading {describe(obj)}: {one_line(err)}") from None


def apply(kube: Kube, obj: Mapping[str, Any], *, dry_run: bool = False, attempts: int = 6,
          wait: float = 5.0) -> str:
    """Server-side apply one object unless the live one already has its fields: 'unchanged' or 'applied'.

    A 404 (its CRD not established yet) or 5xx (a webhook not ready) is retried a few times.
    """
    live = get(kube, obj)
    if live is not None and contains(dict(obj), live):
        return "unchanged"
    if dry_run:
        return "would apply"
    last = ""
    for attempt in range(attempts):
        with kube.api() as client:
            try:
                _call(client, "PATCH", object_path(obj), body=dict(obj), content_type="application/apply-patch+yaml",
                      query=[("fieldManager", FIELD_MANAGER), ("force", "true")], timeout=kube.request_timeout)
                return "applied"
            except Exception as err:
                last = one_line(err)
                if not (is_api_error(err, 404, 500, 502, 503, 504)) or attempt == attempts - 1:
                    break
        time.sleep(wait)
    raise KubeError(f"applying {describe(obj)} failed: {last}")


def patch(kube: Kube, obj: Mapping[str, Any], *, dry_run: bool = False) -> str:
    """Strategic-merge patch an object a chart made, unless it has the patch: 'unchanged' or 'patched'."""
    live = get(kube, obj)
    if live is None:
        raise KubeError(f"cannot patch {describe(obj)}: there is no such object (its release should have made it)")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    if patched(body, live):
        return "unchanged"
    if dry_run:
        return "would patch"
    with kube.api() as client:
        try:
            _call(client, "PATCH", object_path(obj), body=body,
                  content_type="application/strategic-merge-patch+json", timeout=kube.request_timeout)
        except Exception as err:
            raise KubeError(f"patching {describe(obj)} failed: {one_line(err)}") from None
    return "patched"


def ensure_namespace(kube: Kube, name: str, *, dry_run: bool = False) -> str:
    """Create a plain namespace when there is none (one a manifest defines is left as it is)."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if get(kube, ns) is not None:
        return "unchanged"
    if dry_run:
        return "would create"
    with kube.api() as client:  # its own field manager: it never takes fields a manifest's apply set
        try:
            _call(client, "PATCH", f"/api/v1/namespaces/{name}", body=ns, content_type="application/apply-patch+yaml",
                  query=[("fieldManager", NAMESPACE_MANAGER)], timeout=kube.request_timeout)
        except Exception as err:
            raise KubeError(f"creating namespace {name}: {one_line(err)}") from None
    return "created"


def put_secret(kube: Kube, namespace: str, name: str, data: Mapping[str, str], *, dry_run: bool = False) -> str:
    """Make Secret namespace/name hold exactly `data`: 'unchanged', 'created' or 'updated' (values never shown)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "picluster"}},
            "data": encoded}
    path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
    with kube.api() as client:
        try:
            live = _call(client, "GET", path, timeout=kube.request_timeout)
        except Exception as err:
            if not is_api_error(err, 404):
                raise KubeError(f"reading Secret {namespace}/{name}: {one_line(err)}") from None
            live = None
        if live is not None and (live.get("data") or {}) == encoded:
            return "unchanged"
        if dry_run:
            return "would create" if live is None else "would update"
        try:
            if live is None:
                _call(client, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=body,
                      timeout=kube.request_timeout)
                return "created"
            stale = {k: None for k in live.get("data") or {} if k not in encoded}
            _call(client, "PATCH", path, body={"data": {**encoded, **stale}},
                  content_type="application/merge-patch+json", timeout=kube.request_timeout)
            return "updated"
        except Exception as err:
            raise KubeError(f"writing Secret {namespace}/{name}: {one_line(err)}") from None


def read_secret_key(kube: Kube, namespace: str, name: str, key: str, *, wait: float = 0.0,
                    poll: float = 2.0) -> str | None:
    """One key of a Secret, decoded; waits up to `wait` seconds for it to appear (None if it never does)."""
    deadline = time.monotonic() + wait
    path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
    while True:
        with kube.api() as client:
            try:
                live = _call(client, "GET", path, timeout=kube.request_timeout)
                value = (live.get("data") or {}).get(key)
                if value:
                    return base64.b64decode(value).decode()
            except Exception as err:
                if not is_api_error(err, 404):
                    raise KubeError(f"reading Secret {namespace}/{name}: {one_line(err)}") from None
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)
