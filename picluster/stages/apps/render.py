"""Values, manifests and Secret data rendered from the inventory: addresses, domain, the service registry.

Templates are Jinja (StrictUndefined: a missing name fails) with this context:

- `cluster.name`, `cluster.domain`; `services.<name>` (the registry's address); `fqdn(name)` is
  `<name>.<domain>` and fails for a name the registry lacks, so every ingress host has a DNS record
- `metallb_pool.first/last`, `server_ips`, `gateway_ip`, `timezone`, `elastic_version` (release table)
- `minio.url/port/region/ca_b64` (the bare-metal Minio at the registry's `s3`, its local CA, base64) and
  `minio.cert_chain` (its certificate then the CA, PEM)
- `lookup.<name>` (a release's lookups, read from the cluster), `dashboards` (Grafana dashboards: the JSON
  files under kube-prometheus-stack/dashboards/, then the grafana.com ones pinned in versions.yml)
- Secret data only: `secret(NAME)` (the local store), `htpasswd(user, password)`, `minio_bearer_token()`
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import yaml

from picluster.inventory import Inventory
from picluster.stages.apps.pki import ServerPki
from picluster.stages.apps.spec import Release, Releases
from picluster.versions import GrafanaDashboard

MINIO_PORT = 9091
MINIO_REGION = "eu-west-1"
MINIO_ROOT_USER = "minioadmin"
MINIO_TOKEN_EXPIRY = 4102444800  # 2100-01-01: fixed, so the token (and its Secret) is the same every run
DASHBOARDS = "kube-prometheus-stack/dashboards"
NOT_YET = "not-generated-yet"


class RenderError(Exception):
    """A template that cannot be rendered; the message names the file and the problem."""


@dataclass
class Rendered:
    """One release rendered: its values (and their hash), its manifests, its Secrets' data."""

    release: Release
    values: dict[str, Any]
    before: list[dict[str, Any]] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @property
    def values_hash(self) -> str:
        return values_hash(self.values)

    @property
    def values_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=True, default_flow_style=False)


def values_hash(values: Mapping[str, Any] | None) -> str:
    """sha256 of the values as canonical JSON: what helm stored for a release compares equal to ours."""
    canon = json.dumps(values or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def minio_url(inv: Inventory) -> str:
    return f"https://s3.{inv.cluster.domain}:{MINIO_PORT}"


def htpasswd(user: str, password: str) -> str:
    """An htpasswd line with a bcrypt hash; its salt comes from the inputs, so a re-run gives the same line."""
    import bcrypt

    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(f"picluster-htpasswd:{user}:{password}".encode()).digest()
    salt = "".join(alphabet[b % 64] for b in digest[:21]) + ".Oeu"[digest[21] % 4]
    hashed = bcrypt.hashpw(password.encode(), f"$2b$10${salt}".encode()).decode()
    return f"{user}:{hashed}"


def minio_bearer_token(access_key: str, secret_key: str, expiry: int = MINIO_TOKEN_EXPIRY) -> str:
    """The JWT `mc admin prometheus generate` makes (HS512, issuer prometheus), computed here."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS512", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = b64(json.dumps({"exp": expiry, "iss": "prometheus", "sub": access_key},
                            separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512).digest()
    return f"{header}.{claims}.{b64(signature)}"


def with_ds_prometheus(dashboard: dict[str, Any]) -> dict[str, Any]:
    """A dashboard that declares input DS_PROMETHEUS gets that datasource variable (reference issue #18)."""
    inputs = [i.get("name") for i in dashboard.get("__inputs") or [] if isinstance(i, dict)]
    if "DS_PROMETHEUS" not in inputs:
        return dashboard
    out = json.loads(json.dumps(dashboard))
    templating = out.setdefault("templating", {}).setdefault("list", [])
    if not any(v.get("name") == "DS_PROMETHEUS" for v in templating if isinstance(v, dict)):
        templating.insert(0, {"name": "DS_PROMETHEUS", "label": "datasource", "type": "datasource",
                              "query": "prometheus", "hide": 0, "current": {}, "options": [], "refresh": 1})
    return out


class _Once:
    """A list made on first iteration, so only the templates that loop over it pay for it."""

    def __init__(self, make: Callable[[], list[dict[str, str]]]) -> None:
        self.make = make
        self.items: list[dict[str, str]] | None = None

    def __iter__(self) -> Iterator[dict[str, str]]:
        if self.items is None:
            self.items = self.make()
        return iter(self.items)


class Renderer:
    """Renders the releases of one inventory.

    `secret` gives a store secret's value (None: not there yet, in a plan); `pki` is the Minio CA and
    certificate (None: not made yet, in a plan); `dashboard` gives a pinned grafana.com dashboard (None: not
    downloaded yet, in a plan; listed in `pending_dashboards`). None is read unless a template asks.
    """

    def __init__(self, inv: Inventory, releases: Releases, *, secret: Callable[[str], str | None],
                 pki: ServerPki | None,
                 dashboard: Callable[[GrafanaDashboard], dict[str, Any] | None] = lambda d: None) -> None:
        self.inv, self.releases, self.secret, self.pki, self.dashboard = inv, releases, secret, pki, dashboard
        self.pending_dashboards: list[str] = []
        self._dashboards = _Once(self.dashboards)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(releases.base)),
                                      undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                      autoescape=False)
        self.missing: set[str] = set()

    # --- the context --------------------------------------------------------------------------------

    def fqdn(self, service: str) -> str:
        if service not in self.inv.cluster.services:
            raise RenderError(f"service {service!r} is not in cluster.services of {self.inv.path}; add it "
                              f"there (it gives the DNS record too); known: {', '.join(self.inv.cluster.services)}")
        return f"{service}.{self.inv.cluster.domain}"

    def context(self) -> dict[str, Any]:
        c = self.inv.cluster
        gateway = self.inv.gateway
        pki = self.pki
        ca_b64 = base64.b64encode(pki.ca_pem.encode()).decode() if pki else NOT_YET
        chain = pki.chain_pem if pki else NOT_YET
        elastic = next((r.version for r in self.releases.versions.release if r.software == "Elastic Search"), None)
        return {
            "cluster": {"name": c.name, "domain": c.domain},
            "services": {name: str(ip) for name, ip in c.services.items()},
            "fqdn": self.fqdn,
            "metallb_pool": {"first": str(c.metallb_pool[0]), "last": str(c.metallb_pool[1])},
            "server_ips": [str(h.ip) for h in self.inv.servers],
            "gateway_ip": str(gateway.ip) if gateway else "",
            "timezone": self.inv.settings.timezone,
            "elastic_version": elastic,
            "minio": {"url": minio_url(self.inv), "port": MINIO_PORT, "region": MINIO_REGION,
                      "ca_b64": ca_b64, "cert_chain": chain},
            "dashboards": self._dashboards,
            "lookup": {},
        }

    def dashboards(self) -> list[dict[str, str]]:
        folder = self.releases.base / DASHBOARDS
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise RenderError(f"{path}: not valid JSON: {err}") from None
            name = re.sub(r"[^a-z0-9-]", "-", path.stem.lower())
            out.append({"name": name, "json": json.dumps(with_ds_prometheus(data), sort_keys=True)})
        local = {d["name"] for d in out}
        for pinned in self.releases.versions.dashboards.values():
            if pinned.name in local:
                raise RenderError(f"dashboard {pinned.name} is both a file under {folder} and pinned in "
                                  f"{self.releases.versions.path} (dashboards): keep one")
            data = self.dashboard(pinned)
            if data is None:
                self.pending_dashboards.append(f"{pinned.name} ({pinned.label})")
                continue
            out.append({"name": pinned.name, "json": json.dumps(with_ds_prometheus(data), sort_keys=True)})
        return out

    def _secret(self, name: str) -> str:
        value = self.secret(name)
        if value is None:
            self.missing.add(name)
            return NOT_YET
        return value

    def _token(self) -> str:
        return minio_bearer_token(MINIO_ROOT_USER, self._secret("minio_root_password"))

    # --- rendering ----------------------------------------------------------------------------------

    def _template(self, rel: str, ctx: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(rel).render(**ctx)
        except RenderError:
            raise
        except jinja2.TemplateError as err:
            line = getattr(err, "lineno", None)
            where = f"{rel}:{line}" if line else rel
            raise RenderError(f"{self.releases.base / where}: {err}") from None

    def _documents(self, rel: str, ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
        text = self._template(rel, ctx)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise RenderError(f"{self.releases.base / rel}: renders to invalid YAML: {first}") from None
        for i, doc in enumerate(docs):
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind") \
                    or not isinstance(meta, dict) or not meta.get("name"):
                raise RenderError(f"{self.releases.base / rel}: document {i + 1} is not a Kubernetes object "
                                  "(apiVersion, kind and metadata.name)")
        return docs

    def render(self, release: Release, lookups: Mapping[str, str] | None = None) -> Rendered:
        """Everything one release needs, rendered; lookups not given render as a placeholder."""
        ctx = self.context()
        ctx["lookup"] = {name: (lookups or {}).get(name, NOT_YET) for name in release.lookups}
        values: dict[str, Any] = {}
        if release.values:
            text = self._template(release.values, ctx)
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise RenderError(f"{self.releases.base / release.values}: renders to invalid YAML: "
                                  f"{str(err).splitlines()[0]}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise RenderError(f"{self.releases.base / release.values}: values must be a mapping")
            values = loaded or {}
        out = Rendered(release, values)
        ctx["values_yaml"] = out.values_yaml
        out.before = [d for rel in release.before for d in self._documents(rel, ctx)]
        out.manifests = [d for rel in release.manifests for d in self._documents(rel, ctx)]
        out.patches = [d for rel in release.patches for d in self._documents(rel, ctx)]
        secret_ctx = {**ctx, "secret": self._secret, "htpasswd": htpasswd, "minio_bearer_token": self._token}
        for spec in release.secrets:
            data = {}
            for key, template in spec.data.items():
                try:
                    data[key] = self.env.from_string(template).render(**secret_ctx)
                except jinja2.TemplateError as err:
                    raise RenderError(f"{self.releases.path}: release {release.name}: secret {spec.name} "
                                      f"key {key}: {err}") from None
            out.secrets[(spec.namespace, spec.name)] = data
        return out

