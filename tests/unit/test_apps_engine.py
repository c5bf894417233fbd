"""Applying the releases against kmock's Kubernetes API over HTTP and a helm test double that records argv.

The order, the exact helm commands, Secrets created through the API (and never in argv or a values file),
manifests applied server-side, idempotence (deployed chart and values hash match: skipped), the plan, and
the explicit skip without helm or a kubeconfig.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import kmock as km
import pytest
import yaml
from apps_support import FakeHelm, SsaEmulator, secret_object
from kube_support import run, server_faults, write_kubeconfig

from picluster import secrets as store
from picluster.inventory import Inventory, load_inventory
from picluster.stages.apps.engine import Tools, plan_releases, run_releases
from picluster.stages.apps.spec import SpecError, load_releases
from picluster.versions import REPO_ROOT, load_versions

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBtrustanchor\n-----END CERTIFICATE-----\n"
HELM_ORDER = ["metallb", "certmanager", "linkerd2", "velero", "longhorn", "elastic-operator", "fluentd",
              "fluent-bit", "prometheus-elasticsearch-exporter", "kube-prometheus-stack", "linkerd-viz"]
FAST = {"lookup_wait": 1.0, "apply_attempts": 1, "apply_wait": 0.0}
LONGHORN_UI = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "longhorn-ui", "namespace": "longhorn-system"},
    "spec": {"template": {"metadata": {"labels": {"app": "longhorn-ui"}},
                          "spec": {"containers": [{"name": "longhorn-ui", "image": "longhornio/longhorn-ui"}]}}}}
LONGHORN_MANAGER = {
    "apiVersion": "apps/v1", "kind": "DaemonSet",
    "metadata": {"name": "longhorn-manager", "namespace": "longhorn-system"},
    "spec": {"template": {"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}, "spec": {"containers": [
        {"name": "longhorn-manager", "image": "longhornio/longhorn-manager:v1.3.0",
         "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                 {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}}}


@pytest.fixture
def inv(tmp_path: Path, made_pki: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """The reference inventory, with this test's own secrets store and state folder (the CA made once)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))
    for name in list(__import__("os").environ):
        if name.startswith("PICLUSTER_SECRET_"):
            monkeypatch.delenv(name)
    shutil.copytree(made_pki, tmp_path / "state" / "pki")
    return load_inventory(REPO_ROOT / "hosts/inventory.yml")


@pytest.fixture
def helm(tmp_path: Path) -> FakeHelm:
    return FakeHelm.install(tmp_path)


@pytest.fixture
def tools(kmock: km.KubernetesEmulator, helm: FakeHelm, tmp_path: Path) -> Iterator[Tools]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    # what cert-manager makes from linkerd/identity-issuer.yml: the lookup reads the trust anchor from it
    kmock.objects["v1/secrets", "linkerd", "linkerd-identity-issuer"] = secret_object(
        "linkerd", "linkerd-identity-issuer", {"ca.crt": TRUST_ANCHOR, "tls.crt": "c", "tls.key": "k"})
    # what the longhorn chart renders (through the post-renderer) and makes (the helm double makes no objects)
    helm.set(chart_manifests={"longhorn-system/longhorn": yaml.safe_dump_all([LONGHORN_MANAGER, LONGHORN_UI])})
    kmock.objects["apps/v1/daemonsets", "longhorn-system", "longhorn-manager"] = LONGHORN_MANAGER
    kmock.objects["apps/v1/deployments", "longhorn-system", "longhorn-ui"] = LONGHORN_UI
    yield Tools(str(helm.path), kubeconfig)
    assert server_faults(kmock) == []


def store_values() -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in store.secrets_dir().iterdir()}


def writes(kmock: km.KubernetesEmulator) -> list[km.Request]:
    return [*kmock["post"], *kmock["patch"], *kmock["put"]]


async def test_a_first_run_installs_every_release_in_order_with_the_exact_commands(
        kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools) -> None:
    result = await run(run_releases, inv, tools=tools, **FAST)

    assert result.host == "controller" and result.status == "changed", [s.message for s in result.steps]
    assert [s.name for s in result.steps] == [f"release {r.name}" for r in load_releases().ordered()]
    upgrades = helm.argvs("upgrade")
    assert [a[2] for a in upgrades] == HELM_ORDER
    kubeconfig = ["--kubeconfig", str(tools.kubeconfig)]
    metallb = upgrades[0]
    assert metallb == ["upgrade", "--install", "metallb", "metallb/metallb", "--version", "0.13.4",
                       "--namespace", "metallb-system", "--create-namespace", "--wait", "--atomic",
                       "--timeout", "10m", *kubeconfig]                  # no values of its own: no --values
    certmanager = upgrades[1]
    assert certmanager[:13] == ["upgrade", "--install", "certmanager", "jetstack/cert-manager", "--version",
                                "v1.9.1", "--namespace", "certmanager-system", "--create-namespace", "--wait",
                                "--atomic", "--timeout", "10m"]
    assert certmanager[13] == "--values" and certmanager[14].endswith("/certmanager.values.yml")
    assert certmanager[15:] == kubeconfig
    assert not Path(certmanager[14]).exists()                           # the values file is gone afterwards
    # repositories added (once each) and updated before the first install
    calls = helm.argvs()
    first_upgrade = calls.index(metallb)
    added = sorted(a[2] for a in calls[:first_upgrade] if a[:2] == ["repo", "add"])
    assert added == ["elastic", "fluent", "jetstack", "linkerd", "longhorn", "metallb", "prometheus-community",
                     "vmware-tanzu"]
    assert ["repo", "update", *kubeconfig] in calls[:first_upgrade]
    # the values helm got: rendered from the inventory, the trust anchor read from the cluster
    by_release = {c["argv"][2]: c.get("values_file") for c in helm.calls() if c["argv"][0] == "upgrade"}
    assert "identityTrustAnchorsPEM: '-----BEGIN CERTIFICATE-----\n\n    MIIBtrustanchor" in by_release["linkerd2"] \
        or "MIIBtrustanchor" in by_release["linkerd2"]
    deployed = helm.releases()
    assert deployed["linkerd/linkerd2"]["values"]["identityTrustAnchorsPEM"] == TRUST_ANCHOR
    assert deployed["velero-system/velero"]["values"]["configuration"]["backupStorageLocation"]["config"][
        "s3Url"] == "https://s3.picluster.example.com:9091"
    check_secrets_are_created_through_the_api_and_never_reach_helm(kmock, helm)
    check_manifests_are_applied_server_side_after_their_release(kmock)
    # helm deploys the patches too (its post-renderer), so a later upgrade merges cleanly
    upgrade = next(c for c in helm.calls() if c["argv"][:3] == ["upgrade", "--install", "longhorn"])
    renderer = upgrade["argv"][upgrade["argv"].index("--post-renderer") + 1]
    assert not Path(renderer).exists()                                  # a temporary file, gone afterwards
    manager, ui = yaml.safe_load_all(upgrade["post_rendered"])
    assert ui["spec"]["template"]["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    assert manager["spec"]["template"]["spec"]["containers"][0]["env"][1] == {"name": "POD_IP", "value": "0.0.0.0"}
    assert all("--post-renderer" not in c["argv"] for c in helm.calls() if c["argv"][:3] != upgrade["argv"][:3])
    longhorn = next(s for s in result.steps if s.name == "release longhorn")
    assert {"DaemonSet longhorn-system/longhorn-manager: patched",
            "Deployment longhorn-system/longhorn-ui: patched"} <= set(longhorn.diff.splitlines())


def check_secrets_are_created_through_the_api_and_never_reach_helm(kmock: km.KubernetesEmulator,
                                                                   helm: FakeHelm) -> None:
    generated = store_values()
    assert {"basic_auth_password", "minio_velero_password", "minio_longhorn_password", "elastic_password",
            "fluentd_shared_key", "grafana_admin_password", "minio_root_password"} <= set(generated)
    assert all((store.secrets_dir() / name).stat().st_mode & 0o077 == 0 for name in generated)
    posted = {(r.url.path, r.data["metadata"]["name"]): r.data
              for r in kmock["post", km.resource("v1/secrets")]}
    velero = posted["/api/v1/namespaces/velero-system/secrets", "velero-secret"]
    cloud = base64.b64decode(velero["data"]["cloud"]).decode()
    assert f"aws_secret_access_key = {generated['minio_velero_password']}" in cloud
    elastic = posted["/api/v1/namespaces/k3s-logging/secrets", "efk-es-elastic-user"]
    assert base64.b64decode(elastic["data"]["elastic"]).decode() == generated["elastic_password"]
    auth = posted["/api/v1/namespaces/traefik-system/secrets", "basic-auth-secret"]
    assert base64.b64decode(auth["data"]["users"]).decode().startswith("admin:$2b$10$")
    assert {name for _, name in posted} == {"basic-auth-secret", "velero-secret", "minio-secret",
                                           "efk-es-elastic-user", "fluentd-shared-key", "grafana",
                                           "minio-monitor-token"}
    # no secret value in any argv helm got, nor in any values file it read
    recorded = json.dumps(helm.calls())
    for name, value in generated.items():
        assert value not in recorded, name
    # nor in any manifest applied
    applied = json.dumps([r.data for r in kmock["patch"]])
    for name, value in generated.items():
        assert value not in applied, name


def check_manifests_are_applied_server_side_after_their_release(kmock: km.KubernetesEmulator) -> None:
    applies = [r for r in kmock["patch"] if r.headers.get("Content-Type") == "application/apply-patch+yaml"]
    assert applies and all(r.params == {"fieldManager": "picluster", "force": "true"} for r in applies
                           if r.params.get("fieldManager") != "picluster-namespaces")
    ensured = [r.url.path for r in applies if r.params.get("fieldManager") == "picluster-namespaces"]
    assert ensured == ["/api/v1/namespaces/longhorn-system"]    # a Secret's namespace no manifest defines
    paths = [r.url.path for r in applies]
    pool = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/picluster-pool"
    assert kmock.objects["metallb.io/v1beta1/ipaddresspools", "metallb-system", "picluster-pool"][
        "spec"]["addresses"] == ["10.0.0.100-10.0.0.200"]
    hcc = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmchartconfigs/traefik"
    issuer = "/apis/cert-manager.io/v1/clusterissuers/ca-issuer"
    identity = "/apis/cert-manager.io/v1/namespaces/linkerd/certificates/linkerd-identity-issuer"
    assert paths.index(pool) < paths.index(issuer) < paths.index(identity) < paths.index(hcc)
    # the identity issuer (before linkerd2) is applied before linkerd2's helm command, the HelmChartConfig after
    assert "loadBalancerIP: 10.0.0.100" in kmock.objects["helm.cattle.io/v1/helmchartconfigs", "kube-system",
                                                         "traefik"]["spec"]["valuesContent"]
    ext = kmock.objects["v1/services", "k3s-logging", "fluentd-ext"]
    assert ext["spec"]["loadBalancerIP"] == "10.0.0.101"
    gateway = kmock.objects["v1/endpoints", "k3s-monitoring", "external-node-metrics-service"]
    assert gateway["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]
    # Longhorn in the mesh: strategic-merge patches of the chart's objects (kubectl set env / patch)
    patches = [r for r in kmock["patch"] if "longhorn-manager" in r.url.path or "longhorn-ui" in r.url.path]
    smp = "application/strategic-merge-patch+json"
    assert [(r.url.path, r.headers["Content-Type"]) for r in patches] == [
        ("/apis/apps/v1/namespaces/longhorn-system/daemonsets/longhorn-manager", smp),
        ("/apis/apps/v1/namespaces/longhorn-system/deployments/longhorn-ui", smp)]
    assert patches[0].data == {"spec": {"template": {"spec": {"containers": [{"name": "longhorn-manager", "env": [
        {"name": "POD_IP", "value": "0.0.0.0", "valueFrom": None}]}]}}}}
    assert patches[1].data == {"spec": {"template": {"metadata": {"annotations": {"linkerd.io/inject": "enabled"}}}}}
    # the pinned grafana.com dashboards, downloaded (from the test double) and applied as ConfigMaps
    velero = kmock.objects["v1/configmaps", "k3s-monitoring", "dashboard-velero"]
    assert json.loads(velero["data"]["velero.json"])["title"] == "double 11055 r2"


async def test_a_second_run_changes_nothing(kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm,
                                            tools: Tools) -> None:
    await run(run_releases, inv, tools=tools, **FAST)
    helm.clear_calls()
    before = len(writes(kmock))

    again = await run(run_releases, inv, tools=tools, **FAST)

    assert again.status == "ok", [(s.name, s.diff, s.message) for s in again.steps]
    assert all("values hash" in s.reason and "matches" in s.reason for s in again.steps
               if s.name != "release traefik")
    assert helm.argvs("upgrade") == [] and helm.argvs("repo") == []
    assert len(writes(kmock)) == before            # nothing sent: every object and Secret already matched


async def test_the_plan_says_install_upgrade_or_unchanged_and_changes_nothing(
        kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools) -> None:
    fresh = await run(plan_releases, inv, tools=tools)
    assert [(p.release.name, p.action) for p in fresh] == [
        (name, "configure" if name == "traefik" else "install") for name in
        ["metallb", "certmanager", "linkerd2", "traefik", *HELM_ORDER[3:]]]
    assert helm.argvs("upgrade") == [] and writes(kmock) == []
    assert not store.secrets_dir().exists()        # a plan generates no secret
    stack = next(p for p in fresh if p.release.name == "kube-prometheus-stack")   # and downloads nothing
    assert stack.reason.endswith(f"; {len(load_versions().dashboards)} grafana.com dashboards to download")

    await run(run_releases, inv, tools=tools, **FAST)
    releases = helm.releases()
    releases["metallb-system/metallb"]["chart"] = "metallb-0.13.3"          # an older chart deployed
    releases["longhorn-system/longhorn"]["values"]["defaultSettings"]["defaultDataPath"] = "/data"  # drifted
    releases["k3s-logging/fluent-bit"]["status"] = "failed"
    del releases["linkerd-viz/linkerd-viz"]
    helm.set(releases=releases)
    helm.clear_calls()

    plan = {p.release.name: p for p in await run(plan_releases, inv, tools=tools)}
    assert {n: p.action for n, p in plan.items() if p.action != "unchanged"} == {
        "metallb": "upgrade", "longhorn": "upgrade", "fluent-bit": "upgrade", "linkerd-viz": "install"}
    assert plan["metallb"].reason == "chart metallb-0.13.3 deployed, metallb-0.13.4 pinned"
    assert plan["longhorn"].reason.startswith("values changed (hash ")
    assert plan["fluent-bit"].reason.startswith("helm reports status failed")
    assert plan["traefik"].action == "unchanged"
    assert "dashboards to download" not in plan["kube-prometheus-stack"].reason     # the run downloaded them
    assert helm.argvs("upgrade") == []

    result = await run(run_releases, inv, tools=tools, **FAST)
    assert [a[2] for a in helm.argvs("upgrade")] == ["metallb", "longhorn", "fluent-bit", "linkerd-viz"]
    assert result.status == "changed"


async def test_a_changed_secret_in_the_store_updates_the_kubernetes_secret(
        kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools) -> None:
    await run(run_releases, inv, tools=tools, **FAST)
    (store.secrets_dir() / "elastic_password").write_text("a-new-password\n")

    result = await run(run_releases, inv, tools=tools, only=["elastic-operator"], **FAST)

    (step,) = result.steps
    assert step.status == "changed"
    assert step.diff == "Secret k3s-logging/efk-es-elastic-user: updated (values not shown)"
    (patch,) = [r for r in kmock["patch", km.resource("v1/secrets")]]
    assert base64.b64decode(patch.data["data"]["elastic"]).decode() == "a-new-password"
    assert "a-new-password" not in step.diff + json.dumps(helm.calls())


async def test_a_failing_release_stops_the_run_and_says_what_ran(
        kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools) -> None:
    helm.set(fail={"upgrade": "timed out waiting for the condition"})

    result = await run(run_releases, inv, tools=tools, **FAST)

    assert result.status == "failed"
    (step,) = result.steps                       # metallb failed: nothing after it ran
    assert step.name == "release metallb" and step.status == "failed"
    assert "exited 1: Error: timed out waiting for the condition" in step.message
    assert "not applied (they come after it): certmanager, linkerd2, traefik" in step.message
    assert step.commands[-1].startswith("/") and "upgrade --install metallb metallb/metallb" in step.commands[-1]


async def test_without_helm_or_kubeconfig_the_releases_are_an_explicit_skip(
        inv: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helm_on_path = tmp_path / "path-bin"
    helm_on_path.mkdir()
    (helm_on_path / "helm").write_text("#!/bin/sh\nexit 1\n")
    (helm_on_path / "helm").chmod(0o755)
    monkeypatch.setenv("PATH", str(helm_on_path))              # not the pinned helm: never used
    monkeypatch.setenv("PICLUSTER_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setenv("PICLUSTER_HELM_SITE", "http://127.0.0.1:9")   # a download would fail loudly
    monkeypatch.delenv("PICLUSTER_HELM", raising=False)
    monkeypatch.setenv("PICLUSTER_KUBECONFIG", str(tmp_path / "kubeconfig"))
    detected = Tools.detect(inv)
    assert detected.helm is None
    result = run_releases(inv, tools=detected)
    (step,) = result.steps                                       # no kubeconfig: helm is not even downloaded
    assert result.status == "ok" and step.status == "skipped"
    assert step.reason.startswith(f"skipped: no kubeconfig at {tmp_path / 'kubeconfig'}")
    assert not (tmp_path / "tools").exists()
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\n")
    with pytest.raises(SpecError, match=r"cannot plan from this controller: helm v3\.6\.3 is not installed at "):
        plan_releases(inv, tools=Tools.detect(inv))
    (tmp_path / "kubeconfig").unlink()

    helm = FakeHelm.install(tmp_path / "h")
    result = run_releases(inv, tools=Tools(str(helm.path), tmp_path / "kubeconfig"))
    assert result.steps[0].reason == (f"skipped: no kubeconfig at {tmp_path / 'kubeconfig'} (the k3s stage "
                                      "fetches it; or set PICLUSTER_KUBECONFIG)")
    with pytest.raises(SpecError, match="cannot plan from this controller: no kubeconfig"):
        plan_releases(inv, tools=Tools(str(helm.path), tmp_path / "kubeconfig"))
    assert helm.calls() == []


async def test_the_plan_and_status_tasks(kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools,
                                         tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PICLUSTER_HELM=str(helm.path), PICLUSTER_KUBECONFIG=str(tools.kubeconfig),
               COLUMNS="200")                                   # the helm double instead of the pinned helm
    invoke = [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*invoke, *args, "--inventory", str(inv.path)], capture_output=True, text=True,
                              env=env, cwd=REPO_ROOT, timeout=120)

    planned = await run(cli, "apps.plan")
    assert planned.returncode == 0, planned.stderr
    assert "metallb-system" in planned.stdout and "not deployed; metallb-0.13.4" in planned.stdout
    assert planned.stdout.count("install") == 11 and "configure" in planned.stdout
    status = await run(cli, "apps.status")
    assert status.returncode == 1 and "11 release(s) not deployed at their pinned chart" in status.stderr
    assert helm.argvs("upgrade") == [] and writes(kmock) == []


async def test_a_patch_is_had_when_the_live_object_merges_to_it() -> None:
    from picluster.stages.apps.kubeapply import patched

    env_patch = {"spec": {"template": {"spec": {"containers": [{"name": "longhorn-manager", "env": [
        {"name": "POD_IP", "value": "0.0.0.0", "valueFrom": None}]}]}}}}
    assert not patched(env_patch, LONGHORN_MANAGER)                     # the chart's valueFrom: to patch
    done = json.loads(json.dumps(LONGHORN_MANAGER))
    done["spec"]["template"]["spec"]["containers"][0]["env"][1] = {"name": "POD_IP", "value": "0.0.0.0"}
    assert patched(env_patch, done)                                     # other containers' fields, env kept
    done["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"] = {"fieldRef": {}}
    assert not patched(env_patch, done)                                 # a null means: not there
    assert not patched({"spec": {"replicas": 2}}, {"spec": {}}) and patched({"spec": {"replicas": 2}},
                                                                            {"spec": {"replicas": "2"}})


async def test_patching_an_object_the_release_did_not_make_fails_saying_so(
        kmock: km.KubernetesEmulator, inv: Inventory, helm: FakeHelm, tools: Tools) -> None:
    del kmock.objects["apps/v1/deployments", "longhorn-system", "longhorn-ui"]
    result = await run(run_releases, inv, tools=tools, **FAST)
    failed = [s for s in result.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["release longhorn"]
    assert failed[0].message.splitlines()[0] == ("cannot patch Deployment longhorn-system/longhorn-ui: there is no "
                                                 "such object (its release should have made it)")
