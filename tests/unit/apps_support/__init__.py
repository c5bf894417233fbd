"""Helpers for the apps tests: a helm test double on PATH, and kmock answering server-side apply.

The fake helm (./fake_helm) records every argv and answers `helm list -o json` and `helm get values` from
a state file; kmock serves the Kubernetes API over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock as km

FAKE_HELM = Path(__file__).parent / "fake_helm"


class SsaEmulator(km.KubernetesEmulator):
    """kmock's emulator, plus what server-side apply does to an object that does not exist yet: create it.

    kmock parses /api/v1/namespaces/NAME as a namespace, not as a Namespace object, so Namespaces are kept
    here (`namespaces`), served for GET and server-side apply.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.namespaces: dict[str, dict[str, Any]] = {}

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        found = re.fullmatch(r"/api/v1/namespaces/([^/]+)", request.url.path)
        if found:
            name = found.group(1)
            if request.method == km.method.GET:
                if name not in self.namespaces:
                    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                              "reason": "NotFound", "code": 404,
                                              "message": f'namespaces "{name}" not found'}, status=404)
                return web.json_response(self.namespaces[name])
            if request.method == km.method.PATCH:
                self.namespaces[name] = merged(self.namespaces.get(name, {}), request.data)
                return web.json_response(self.namespaces[name])
        content_type = str(request.headers.get("Content-Type", ""))
        if (request.method == km.method.PATCH and content_type.startswith("application/apply-patch")
                and request.resource is not None and request.name is not None):
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    if key in self._objects:
                        self._objects[key].create(request.data)
                    else:
                        self._objects[key] = request.data
        return await super()._handle(request)


@dataclass
class FakeHelm:
    """The helm double: `path` is the executable to give as the helm binary."""

    path: Path
    state: Path

    @classmethod
    def install(cls, root: Path) -> FakeHelm:
        state = root / "helm-state"
        state.mkdir(parents=True)
        (root / "bin").mkdir()
        path = root / "bin" / "helm"
        path.write_text(f'#!/bin/sh\nFAKE_HELM_STATE="{state}" exec "{sys.executable}" "{FAKE_HELM}" "$@"\n')
        path.chmod(0o755)
        return cls(path, state)

    def calls(self) -> list[dict[str, Any]]:
        f = self.state / "calls.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def argvs(self, verb: str | None = None) -> list[list[str]]:
        return [c["argv"] for c in self.calls() if verb is None or c["argv"][0] == verb]

    def clear_calls(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)

    def releases(self) -> dict[str, Any]:
        f = self.state / "state.json"
        return json.loads(f.read_text()).get("releases", {}) if f.exists() else {}

    def set(self, **state: Any) -> None:
        f = self.state / "state.json"
        current = json.loads(f.read_text()) if f.exists() else {}
        current.update(state)
        f.write_text(json.dumps(current))


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def secret_object(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    """A Secret as the API stores it (data base64-encoded)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
