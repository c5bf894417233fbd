"""A kubeconfig (and optionally an explicit API server URL) to a fresh API client per call site."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api


class KubeError(Exception):
    """The Kubernetes API could not do what was asked; the message says what and what to look at."""


@dataclass(frozen=True)
class Kube:
    """How to reach one cluster's API: a kubeconfig file, optionally an explicit server URL.

    Each `api()` builds its own ApiClient from the file; the client library's global default
    configuration is never read or changed, so two clusters (or a test's mock) never mix.
    """

    kubeconfig: Path
    server: str | None = None
    context: str | None = None
    request_timeout: float = 10.0

    @property
    def where(self) -> str:
        """The API server this handle talks to, for messages."""
        return self.server or f"the server in {self.kubeconfig}"

    @contextmanager
    def api(self) -> Iterator[ApiClient]:
        """A new ApiClient loaded from the kubeconfig, closed on exit."""
        from kubernetes import client as k8s
        from kubernetes import config

        cfg = k8s.Configuration()      # a fresh one: the global default is never read or changed
        try:
            config.load_kube_config(config_file=str(self.kubeconfig), context=self.context,
                                    client_configuration=cfg, persist_config=False)
        except Exception as err:  # the loader raises ConfigException, OSError, yaml and key errors
            raise KubeError(f"{self.kubeconfig}: cannot load the kubeconfig: {one_line(err)}") from None
        if self.server:
            _override_server(cfg, self.server.rstrip("/"))
        cfg.retries = 1
        client = k8s.ApiClient(configuration=cfg)
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def core(self) -> Iterator[CoreV1Api]:
        """CoreV1Api on a fresh client (nodes, pods, evictions)."""
        from kubernetes.client import CoreV1Api

        with self.api() as client:
            yield CoreV1Api(client)

    @contextmanager
    def apps(self) -> Iterator[AppsV1Api]:
        """AppsV1Api on a fresh client (Deployments, StatefulSets, DaemonSets)."""
        from kubernetes.client import AppsV1Api

        with self.api() as client:
            yield AppsV1Api(client)


def _override_server(cfg: Any, server: str) -> None:
    """Point the configuration at `server`, also after the loader's token-refresh hook re-applies the file."""
    cfg.host = server
    hook = cfg.refresh_api_key_hook
    if hook is not None:
        def refresh(c: Any) -> None:
            hook(c)
            c.host = server
        cfg.refresh_api_key_hook = refresh


def one_line(err: BaseException) -> str:
    """An exception as one short line: an API error's status and message, else its first line."""
    status = getattr(err, "status", None)
    if status is not None and hasattr(err, "body"):
        message = status_message(err)
        reason = getattr(err, "reason", None) or ""
        return f"HTTP {status} {reason}: {message}".strip().rstrip(":") if message else f"HTTP {status} {reason}"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def status_body(err: BaseException) -> dict[str, Any]:
    """The Kubernetes `Status` object an ApiException carries, or {}."""
    body = getattr(err, "body", None)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def status_message(err: BaseException) -> str:
    """The API's own message for an error, with the causes it lists (e.g. which disruption budget)."""
    data = status_body(err)
    message = str(data.get("message") or "").strip()
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    causes = [str(c.get("message")) for c in (details or {}).get("causes") or []
              if isinstance(c, dict) and c.get("message")]
    if causes:
        message = f"{message} ({'; '.join(causes)})" if message else "; ".join(causes)
    if not message:
        body = getattr(err, "body", None)
        message = str(body).strip().splitlines()[0][:200] if body else ""
    return message


def is_api_error(err: BaseException, *statuses: int) -> bool:
    """True for an ApiException with one of these HTTP statuses (any status when none are given)."""
    from kubernetes.client.exceptions import ApiException

    return isinstance(err, ApiException) and (not statuses or err.status in statuses)
