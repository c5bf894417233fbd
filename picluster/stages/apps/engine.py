"""Plan and apply the releases, in dependency order, from the controller.

Per release: manifests `before` (server-side apply), namespaces and Secrets, lookups (waited for), then
`helm upgrade --install --version --namespace --create-namespace --wait --atomic` unless the deployed
chart version and values hash match ours (unchanged: skipped), then the release's manifests, then its
patches of the chart's own objects. Helm applies those patches itself too (a post-renderer), so what it
stores is what runs and a later upgrade merges cleanly.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from picluster import localfs
from picluster import secrets as store
from picluster.inventory import Inventory
from picluster.kube.client import Kube, KubeError
from picluster.remote import SKIPPED
from picluster.remote.results import HostResult, StepResult
from picluster.stages.apps import dashboards, kubeapply, paths, pki
from picluster.stages.apps import tools as toolbox
from picluster.stages.apps.helm import Deployed, Helm, HelmError
from picluster.stages.apps.render import Rendered, Renderer, RenderError, values_hash
from picluster.stages.apps.spec import DEFAULT_RELEASES, Release, Releases, SpecError, load_releases
from picluster.versions import GrafanaDashboard

CONTROLLER = "controller"
LOOKUP_WAIT_S = 300.0


@dataclass(frozen=True)
class ReleasePlan:
    """What applying would do to one release, and why."""

    release: Release
    action: str           # install | upgrade | unchanged | configure (bundled with K3S)
    reason: str
    values_hash: str
    deployed: Deployed | None = None


@dataclass(frozen=True)
class Tools:
    """The facts that decide whether the releases can run from here at all."""

    helm: str | None
    kubeconfig: Path

    @classmethod
    def detect(cls, inv: Inventory) -> Tools:
        """The pinned helm of the project's tools folder (or $PICLUSTER_HELM), and the fetched kubeconfig."""
        return cls(toolbox.installed_helm(), paths.kubeconfig_path(inv))

    def missing(self) -> str | None:
        """Why the releases cannot be applied from this controller, or None."""
        if not self.kubeconfig.is_file():
            return (f"no kubeconfig at {self.kubeconfig} (the k3s stage fetches it; or set "
                    f"{localfs.KUBECONFIG_ENV})")
        if self.helm is None:
            return (f"helm {toolbox.pinned_helm().version} is not installed at {toolbox.helm_path()} "
                    f"(`invoke apps.apply` installs it; or set ${toolbox.HELM_ENV})")
        return None


def ensure_helm(tools: Tools, *, dry_run: bool) -> tuple[Tools, StepResult | None]:
    """`tools` with the pinned helm installed when it is missing (never by a dry run), and the step that says so.

    Decided from the facts: a kubeconfig and a helm already there need nothing; without a kubeconfig the
    releases are skipped anyway, so nothing is downloaded.
    """
    if tools.helm is not None or not tools.kubeconfig.is_file():
        return tools, None
    start = time.monotonic()
    pinned, path = toolbox.pinned_helm(), toolbox.helm_path()
    name = f"helm {pinned.version}"
    if dry_run:
        return tools, StepResult(name, "skipped", 0.0, reason=f"{SKIPPED}would install {name} at {path} "
                                                               "(a dry run downloads nothing)")
    try:
        installed = toolbox.install_helm()
    except toolbox.Unreachable as err:
        return tools, StepResult(name, "skipped", time.monotonic() - start, reason=f"{SKIPPED}{err}")
    except toolbox.ToolError as err:
        return tools, StepResult(name, "failed", time.monotonic() - start, message=str(err))
    return replace(tools, helm=str(installed)), StepResult(
        name, "changed", time.monotonic() - start, reason="not installed in the tools folder",
        diff=f"{installed}: {name} ({toolbox.download_url(pinned, toolbox.controller_arch())}, sha256-checked)")


def minio_pki(inv: Inventory, *, create: bool) -> pki.ServerPki | None:
    """The Minio CA and certificate (for the registry's `s3` name and address), made when `create`."""
    address = inv.cluster.services.get("s3")
    if address is None:
        return None
    name = f"s3.{inv.cluster.domain}"
    folder = paths.pki_dir(inv)
    return pki.ensure(folder, name, str(address)) if create else pki.load(folder, name)


def renderer(inv: Inventory, releases: Releases, *, dry_run: bool) -> Renderer:
    """The renderer of a run: a dry run reads what is there; a real one makes secrets, the CA, downloads."""
    folder = paths.dashboards_dir(inv)

    def dashboard(d: GrafanaDashboard) -> dict[str, object] | None:
        try:
            return dashboards.cached(folder, d) if dry_run else dashboards.fetch(folder, d)
        except dashboards.DashboardError as err:
            raise RenderError(str(err)) from None

    return Renderer(inv, releases, secret=store.read_secret if dry_run else store.ensure_secret,
                    pki=minio_pki(inv, create=not dry_run), dashboard=dashboard)


def decide(release: Release, rendered: Rendered, deployed: dict[tuple[str, str], Deployed],
           live_values: Callable[[str, str], dict[str, object]]) -> ReleasePlan:
    """install / upgrade / unchanged for a helm release, from what helm reports."""
    ours = rendered.values_hash
    d = deployed.get((release.namespace, release.name))
    label = release.chart.label
    if d is None:
        return ReleasePlan(release, "install", f"not deployed; {label}", ours)
    if d.status != "deployed":
        return ReleasePlan(release, "upgrade", f"helm reports status {d.status}; {label}", ours, d)
    if d.chart != label:
        return ReleasePlan(release, "upgrade", f"chart {d.chart} deployed, {label} pinned", ours, d)
    theirs = values_hash(live_values(release.name, release.namespace))
    if theirs != ours:
        return ReleasePlan(release, "upgrade", f"values changed (hash {theirs[:12]} deployed, {ours[:12]} now)",
                           ours, d)
    return ReleasePlan(release, "unchanged", f"{label} deployed, values hash {ours[:12]} matches", ours, d)


@dataclass
class Applier:
    """Applies (or, with dry_run, plans) the releases of one inventory against one cluster."""

    inv: Inventory
    kube: Kube
    helm: Helm
    releases: Releases
    dry_run: bool = False
    lookup_wait: float = LOOKUP_WAIT_S
    apply_attempts: int = 6
    apply_wait: float = 5.0
    _deployed: dict[tuple[str, str], Deployed] | None = None
    _repos_ready: bool = False
    renderer: Renderer = field(init=False)

    def __post_init__(self) -> None:
        self.renderer = renderer(self.inv, self.releases, dry_run=self.dry_run)

    def deployed(self) -> dict[tuple[str, str], Deployed]:
        if self._deployed is None:
            self._deployed = self.helm.deployed()
        return self._deployed

    def lookups(self, release: Release, *, wait: float) -> dict[str, str]:
        found = {}
        for name, spec in release.lookups.items():
            value = kubeapply.read_secret_key(self.kube, spec.namespace, spec.secret, spec.key, wait=wait)
            if value is not None:
                found[name] = value
            elif not self.dry_run:
                raise KubeError(f"lookup {name}: Secret {spec.namespace}/{spec.secret} has no key {spec.key!r} "
                                f"after {wait:.0f}s; check the objects applied before {release.name} (e.g. "
                                "`kubectl describe certificate -A`)")
        return found

    def plan(self, release: Release) -> ReleasePlan:
        """What applying would do to this release (reads helm and the cluster, changes nothing)."""
        rendered = self.renderer.render(release, self.lookups(release, wait=0.0) if release.lookups else None)
        if not release.helm:
            pending = [kubeapply.describe(o) for o in rendered.manifests
                       if not kubeapply.contains(o, kubeapply.get(self.kube, o))]
            if pending:
                return ReleasePlan(release, "configure", f"bundled with K3S; to apply: {', '.join(pending)}",
                                   rendered.values_hash)
            return ReleasePlan(release, "unchanged", "bundled with K3S; its HelmChartConfig is in place",
                               rendered.values_hash)
        missing = [n for n in release.lookups if n not in self.lookups(release, wait=0.0)]
        plan = decide(release, rendered, self.deployed(), self.helm.values)
        if missing and plan.action == "unchanged":
            return ReleasePlan(release, "upgrade", f"lookup {', '.join(missing)} not readable yet", plan.values_hash,
                               plan.deployed)
        if self.renderer.pending_dashboards:
            pending, self.renderer.pending_dashboards = self.renderer.pending_dashboards, []
            return replace(plan, reason=f"{plan.reason}; {len(pending)} grafana.com dashboards to download")
        return plan

    def _objects(self, objs: Sequence[dict[str, object]], diff: list[str], *, patches: bool = False) -> int:
        """Apply (or, with `patches`, patch) each object; say what changed in `diff`; count the unchanged."""
        unchanged = 0
        for obj in objs:
            if patches:
                outcome = kubeapply.patch(self.kube, obj, dry_run=self.dry_run)
            else:
                outcome = kubeapply.apply(self.kube, obj, dry_run=self.dry_run, attempts=self.apply_attempts,
                                          wait=self.apply_wait)
            if outcome == "unchanged":
                unchanged += 1
            else:
                diff.append(f"{kubeapply.describe(obj)}: {outcome}")
        return unchanged

    def _ensure_repos(self) -> None:
        if self._repos_ready:
            return
        for name in sorted({r.chart.repo for r in self.releases.releases if r.helm and r.chart.repo}):
            self.helm.repo_add(name, self.releases.versions.repos[name])
        self.helm.repo_update()
        self._repos_ready = True

    def apply(self, release: Release) -> StepResult:
        """Bring one release to its wanted state; a StepResult (changed with the diff, ok with why, failed)."""
        start = time.monotonic()
        first_command = len(self.helm.commands)
        diff: list[str] = []
        reason = ""
        try:
            rendered = self.renderer.render(release)
            unchanged = self._objects(rendered.before, diff)
            for namespace in dict.fromkeys(ns for ns, _ in rendered.secrets):
                outcome = kubeapply.ensure_namespace(self.kube, namespace, dry_run=self.dry_run)
                if outcome != "unchanged":
                    diff.append(f"Namespace {namespace}: {outcome}")
            for (namespace, name), data in rendered.secrets.items():
                outcome = kubeapply.put_secret(self.kube, namespace, name, data, dry_run=self.dry_run)
                if outcome != "unchanged":
                    diff.append(f"Secret {namespace}/{name}: {outcome} (values not shown)")
                else:
                    unchanged += 1
            if release.lookups:
                wait = 0.0 if self.dry_run else self.lookup_wait
                rendered = self.renderer.render(release, self.lookups(release, wait=wait))
            if release.helm:
                plan = decide(release, rendered, self.deployed(), self.helm.values)
                if plan.action != "unchanged":
                    diff.append(f"helm {plan.action} {release.name}: {plan.reason}")
                    if not self.dry_run:
                        self._ensure_repos()
                        self._install(rendered)
                reason = plan.reason
            else:
                reason = f"bundled with K3S ({release.chart.label}): customised by its HelmChartConfig"
            unchanged += self._objects(rendered.manifests, diff)
            unchanged += self._objects(rendered.patches, diff, patches=True)
            if self.renderer.missing:
                diff.append(f"secrets to generate in the local store: {', '.join(sorted(self.renderer.missing))}")
                self.renderer.missing.clear()
            if self.renderer.pending_dashboards:
                diff.append(f"grafana.com dashboards to download: {', '.join(self.renderer.pending_dashboards)}")
                self.renderer.pending_dashboards.clear()
        except (HelmError, KubeError, RenderError, SpecError, store.SecretError) as err:
            return StepResult(f"release {release.name}", "failed", time.monotonic() - start, diff="\n".join(diff),
                              commands=self.helm.commands[first_command:], message=str(err))
        took = time.monotonic() - start
        commands = self.helm.commands[first_command:]
        if diff:
            return StepResult(f"release {release.name}", "changed", took, reason=reason, diff="\n".join(diff),
                              commands=commands)
        return StepResult(f"release {release.name}", "ok", took, commands=commands,
                          reason=f"{reason}; {unchanged} objects and Secrets unchanged")

    def _install(self, rendered: Rendered) -> None:
        with tempfile.TemporaryDirectory(prefix="picluster-values-") as tmp:
            values_file = post_renderer = None
            if rendered.values:
                values_file = Path(tmp) / f"{rendered.release.name}.values.yml"
                values_file.write_text(rendered.values_yaml, encoding="utf-8")
            if rendered.patches:   # part of what helm deploys, so its later upgrades merge cleanly
                post_renderer = write_post_renderer(Path(tmp), rendered)
            self.helm.upgrade_install(rendered.release, values_file, post_renderer)
        self._deployed = None  # re-read after a change


def write_post_renderer(folder: Path, rendered: Rendered) -> Path:
    """An executable helm runs as `--post-renderer`: the release's patches applied to the chart's manifests.

    Helm (3.6) takes no arguments for it, so it is a small script that names the patches file.
    """
    patches = folder / f"{rendered.release.name}.patches.json"
    patches.write_text(json.dumps(rendered.patches), encoding="utf-8")
    script = folder / f"{rendered.release.name}.post-render"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m picluster.stages.apps.postrender "
                      f"{shlex.quote(str(patches))}\n", encoding="utf-8")
    script.chmod(0o700)
    return script


def run_releases(inv: Inventory, *, dry_run: bool = False, only: Sequence[str] | None = None,
                 tools: Tools | None = None, releases_path: Path = DEFAULT_RELEASES,
                 on_release: Callable[[StepResult], None] | None = None, **options: float) -> HostResult:
    """Apply the releases in dependency order, stopping at the first that fails; one HostResult 'controller'.

    Without helm or a kubeconfig this is one explicit skip with the reason, decided from those facts.
    """
    start = time.monotonic()
    tools, helm_step = ensure_helm(tools or Tools.detect(inv), dry_run=dry_run)
    first = [helm_step] if helm_step is not None else []
    if helm_step is not None and helm_step.status == "failed":
        return HostResult(CONTROLLER, "failed", time.monotonic() - start, first, message=helm_step.message)
    why = tools.missing()
    if why is not None:
        step = StepResult("helm releases", "skipped", 0.0, reason=SKIPPED + why)
        return HostResult(CONTROLLER, "ok", time.monotonic() - start, [*first, step])
    assert tools.helm is not None
    try:
        releases = load_releases(releases_path)
        ordered = releases.ordered(only)
    except SpecError as err:
        step = StepResult("releases.yml", "failed", 0.0, message=str(err))
        return HostResult(CONTROLLER, "failed", time.monotonic() - start, [step], message=str(err))
    applier = Applier(inv, Kube(tools.kubeconfig), Helm(tools.helm, tools.kubeconfig), releases, dry_run=dry_run,
                      **options)  # type: ignore[arg-type]
    steps: list[StepResult] = list(first)
    for release in ordered:
        result = applier.apply(release)
        steps.append(result)
        if on_release is not None:
            on_release(result)
        if result.status == "failed":
            later = [r.name for r in ordered[ordered.index(release) + 1:]]
            if later:
                result.message += f"\nnot applied (they come after it): {', '.join(later)}"
            break
    statuses = {s.status for s in steps}
    status = "failed" if "failed" in statuses else "changed" if "changed" in statuses else "ok"
    return HostResult(CONTROLLER, status, time.monotonic() - start, steps)  # type: ignore[arg-type]


def plan_releases(inv: Inventory, *, only: Sequence[str] | None = None, tools: Tools | None = None,
                  releases_path: Path = DEFAULT_RELEASES) -> list[ReleasePlan]:
    """install / upgrade / unchanged per release, in order, without changing anything."""
    tools = tools or Tools.detect(inv)
    why = tools.missing()
    if why is not None:
        raise SpecError(f"cannot plan from this controller: {why}")
    assert tools.helm is not None
    releases = load_releases(releases_path)
    applier = Applier(inv, Kube(tools.kubeconfig), Helm(tools.helm, tools.kubeconfig), releases, dry_run=True)
    return [applier.plan(r) for r in releases.ordered(only)]
