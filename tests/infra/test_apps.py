"""Gate after the apps stage: backups on every Pi, then the platform as the users see it.

Host checks (restic's timer, Minio on the `s3` host) run on each node; the cluster checks run once, from
the controller, with the kubeconfig the k3s stage fetched and the `helm` CLI. Where those are missing, or a
vendor binary could not be installed, the checks say so as an explicit skip.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.request
import uuid
from base64 import b64encode
from ipaddress import IPv4Address
from typing import Any

import pytest

from picluster import secrets
from picluster.inventory import Inventory
from picluster.stages import backup
from picluster.stages.apps.engine import Tools
from picluster.stages.apps.spec import Release, load_releases
from picluster.versions import binary

RELEASES = load_releases().ordered()


# --- on every Pi --------------------------------------------------------------------------------------


REACHABLE: dict[tuple[str, str], bool] = {}   # (host, site) -> answered: asked once per host and site


def require_pinned_binary(host: Any, node: Any, name: str, path: str, version_args: str = "--version") -> None:
    """Pass when `path` is the pinned build; skip only when its download site is unreachable from the host."""
    pinned = binary(name)
    out = host.run(f"{path} {version_args}")
    if out.rc == 0:
        assert pinned.version in out.stdout.split(), f"{path} is not {name} {pinned.version}: {out.stdout!r}"
        return
    site = backup.VendorBinary(pinned, path).site
    if (node.name, site) not in REACHABLE:
        REACHABLE[node.name, site] = host.run(f"curl -sSI --max-time 5 -o /dev/null {site}/").rc == 0
    if not REACHABLE[node.name, site]:
        pytest.skip(f"{name} is not installed on {node.name}: {site} is unreachable from it")
    pytest.fail(f"{path} is missing on {node.name} although {site} answers: re-run `invoke apps.apply`")


def test_restic_backup_timer_is_enabled_and_active(host: Any, inventory: Inventory) -> None:
    if "s3" not in inventory.cluster.services:
        pytest.skip("cluster.services has no 's3': no backups configured")
    timer = host.service("restic-backup.timer")
    assert timer.is_enabled and timer.is_running
    with host.sudo():
        env = host.file(backup.RESTIC_ENV)
        assert env.exists and env.mode == 0o600 and env.user == "root"
        assert host.file(backup.RESTIC_BACKUP).mode == 0o700


def test_restic_is_the_pinned_build(host: Any, node: Any, inventory: Inventory) -> None:
    if "s3" not in inventory.cluster.services:
        pytest.skip("cluster.services has no 's3': no backups configured")
    require_pinned_binary(host, node, "restic", backup.RESTIC_BIN, "version")


def test_the_gateway_alone_maintains_the_repository(host: Any, node: Any) -> None:
    clean = host.service("restic-clean.timer")
    if node.role == "gateway":
        assert clean.is_enabled and clean.is_running
    else:
        assert not host.file(f"{backup.UNITS}/restic-clean.timer").exists


def test_minio_serves_tls_on_the_s3_host(host: Any, node: Any, inventory: Inventory) -> None:
    server = backup.minio_host(inventory)
    if server is None or node.name != server.name:
        pytest.skip(f"{node.name} is not the s3 host")
    require_pinned_binary(host, node, "minio", backup.MINIO_BIN)
    require_pinned_binary(host, node, "mc", backup.MC_BIN)
    assert host.service("minio").is_enabled and host.service("minio").is_running
    assert host.socket("tcp://0.0.0.0:9091").is_listening or host.socket("tcp://:::9091").is_listening
    name = f"s3.{inventory.cluster.domain}"
    with host.sudo():    # the CA copy lives in root's 0700 /etc/restic
        out = host.run(f"curl -fsS --cacert {backup.RESTIC_CA} --resolve {name}:9091:127.0.0.1 "
                       f"https://{name}:9091/minio/health/live -o /dev/null -w '%{{http_code}}'")
    assert out.rc == 0 and out.stdout.strip() == "200", out.stderr


def test_k3s_leaves_local_path_non_default_after_a_restart(host: Any, node: Any) -> None:
    from picluster.stages.k3s import LOCAL_STORAGE

    if node.role != "server":
        pytest.skip(f"{node.name} is not a K3S server")
    with host.sudo():
        if not host.file(LOCAL_STORAGE).exists:
            pytest.skip(f"K3S has not deployed its local-storage manifest on {node.name}")
        assert host.file(LOCAL_STORAGE + ".skip").exists


# --- the cluster, from the controller -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tools(inventory: Inventory) -> Tools:
    found = Tools.detect(inventory)
    why = found.missing()
    if why:
        pytest.skip(f"the cluster checks need helm and the kubeconfig: {why}")
    return found


@pytest.fixture(scope="module")
def api(tools: Tools) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(tools.kubeconfig), client_configuration=cfg, persist_config=False)
    return client.ApiClient(configuration=cfg)


def https(url: str, host_header: str | None = None, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(url)
    if host_header:
        req.add_header("Host", host_header)
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize("release", [r for r in RELEASES if r.helm], ids=[r.name for r in RELEASES if r.helm])
def test_release_is_deployed_at_its_pinned_chart(tools: Tools, release: Release) -> None:
    from picluster.stages.apps.helm import Helm

    deployed = Helm(str(tools.helm), tools.kubeconfig).deployed().get((release.namespace, release.name))
    assert deployed is not None, f"{release.name} is not deployed"
    assert (deployed.chart, deployed.status) == (release.chart.label, "deployed")


@pytest.mark.parametrize("namespace", sorted({r.namespace for r in RELEASES} | {"k3s-logging"}))
def test_workloads_are_ready(api: Any, namespace: str) -> None:
    from kubernetes.client import AppsV1Api

    apps = AppsV1Api(api)
    not_ready = []
    for d in apps.list_namespaced_deployment(namespace).items:
        if (d.status.ready_replicas or 0) < (d.spec.replicas or 0):
            not_ready.append(f"Deployment {d.metadata.name}")
    for s in apps.list_namespaced_stateful_set(namespace).items:
        if (s.status.ready_replicas or 0) < (s.spec.replicas or 0):
            not_ready.append(f"StatefulSet {s.metadata.name}")
    for ds in apps.list_namespaced_daemon_set(namespace).items:
        if (ds.status.number_ready or 0) < (ds.status.desired_number_scheduled or 0):
            not_ready.append(f"DaemonSet {ds.metadata.name}")
    assert not_ready == []


def test_load_balancer_ips_come_from_the_pool(api: Any, inventory: Inventory) -> None:
    from kubernetes.client import CoreV1Api

    first, last = inventory.cluster.metallb_pool
    found = {}
    for svc in CoreV1Api(api).list_service_for_all_namespaces().items:
        if svc.spec.type != "LoadBalancer":
            continue
        ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
        assert ingress, f"{svc.metadata.namespace}/{svc.metadata.name} has no address"
        ip = IPv4Address(ingress[0].ip)
        assert first <= ip <= last, f"{svc.metadata.name}: {ip} is outside the MetalLB pool"
        found[svc.metadata.name] = ip
    assert found.get("traefik") == inventory.cluster.services["traefik"]
    assert found.get("fluentd-ext") == inventory.cluster.services["fluentd"]


def ingress_hosts(api: Any) -> list[str]:
    from kubernetes.client import NetworkingV1Api

    return sorted({rule.host for ing in NetworkingV1Api(api).list_ingress_for_all_namespaces().items
                   for rule in ing.spec.rules or [] if rule.host})


def test_every_ingress_answers(api: Any, inventory: Inventory) -> None:
    traefik = inventory.cluster.services["traefik"]
    hosts = ingress_hosts(api)
    assert hosts
    bad = {}
    for name in hosts:
        code, _ = https(f"https://{traefik}/", host_header=name)
        if code >= 500 or code == 404:
            bad[name] = code
    assert bad == {}


def elastic(inventory: Inventory, path: str) -> dict[str, Any]:
    password = secrets.read_secret("elastic_password")
    if password is None:
        pytest.skip("no elastic_password in the local secrets store")
    code, body = https(f"https://{inventory.cluster.services['traefik']}{path}",
                       host_header=f"elasticsearch.{inventory.cluster.domain}", auth=("elastic", password))
    assert code == 200, body[:300]
    return dict(json.loads(body))


def test_elasticsearch_is_green(tools: Tools, inventory: Inventory) -> None:
    assert elastic(inventory, "/_cluster/health")["status"] == "green"


def test_a_log_line_travels_from_a_node_to_elasticsearch(tools: Tools, inventory: Inventory) -> None:
    import subprocess

    marker = f"picluster-gate-{uuid.uuid4().hex}"
    node = inventory.servers[0]
    subprocess.run(["ssh", "-o", "BatchMode=yes", f"{node.ssh.user}@{node.ssh.address}", "logger", "-t",
                    "picluster-gate", marker], check=True, timeout=30)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        hits = elastic(inventory, f"/fluentd-*/_search?q=message:{marker}")["hits"]["total"]["value"]
        if hits:
            return
        time.sleep(10)
    pytest.fail(f"the line {marker!r} logged on {node.name} did not reach Elasticsearch within 180 s")


def test_prometheus_scrapes_every_target_the_gateway_included(tools: Tools, inventory: Inventory) -> None:
    password = secrets.read_secret("basic_auth_password")
    if password is None:
        pytest.skip("no basic_auth_password in the local secrets store")
    code, body = https(f"https://{inventory.cluster.services['traefik']}/api/v1/targets",
                       host_header=f"prometheus.{inventory.cluster.domain}", auth=("admin", password))
    assert code == 200
    targets = json.loads(body)["data"]["activeTargets"]
    down = [f"{t['labels'].get('job')} {t['scrapeUrl']}: {t.get('lastError')}" for t in targets if t["health"] != "up"]
    assert down == []
    jobs = {t["labels"].get("job", "") for t in targets}
    for wanted in ("traefik", "longhorn", "k3s", "velero", "fluentbit", "fluentd", "elasticsearch", "minio"):
        assert any(wanted in job for job in jobs), f"no target of {wanted}"
    gateway = inventory.gateway
    if gateway is not None:
        assert any(t["labels"].get("instance", "").startswith(f"{gateway.ip}:") for t in targets)


def test_velero_and_longhorn_backup_targets_are_available(api: Any) -> None:
    from kubernetes.client import CustomObjectsApi

    custom = CustomObjectsApi(api)
    bsl = custom.get_namespaced_custom_object("velero.io", "v1", "velero-system", "backupstoragelocations", "default")
    assert bsl.get("status", {}).get("phase") == "Available"
    target = custom.get_namespaced_custom_object("longhorn.io", "v1beta2", "longhorn-system", "backuptargets",
                                                 "default")
    assert target.get("status", {}).get("available") is True


def test_longhorn_manager_and_ui_are_in_the_mesh(api: Any) -> None:
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(api)
    for selector in ("app=longhorn-manager", "app=longhorn-ui"):
        pods = core.list_namespaced_pod("longhorn-system", label_selector=selector).items
        assert pods, f"no pod with {selector} in longhorn-system"
        unmeshed = [p.metadata.name for p in pods if "linkerd-proxy" not in {c.name for c in p.spec.containers}]
        assert unmeshed == [], f"pods without the linkerd proxy: {unmeshed}"


def test_grafana_has_every_dashboard(api: Any) -> None:
    from kubernetes.client import CoreV1Api

    from picluster.stages.apps.render import DASHBOARDS
    from picluster.versions import REPO_ROOT, load_versions

    wanted = {f"dashboard-{p.stem}" for p in (REPO_ROOT / "k8s" / DASHBOARDS).glob("*.json")}
    wanted |= {f"dashboard-{name}" for name in load_versions().dashboards}
    maps = CoreV1Api(api).list_namespaced_config_map("k3s-monitoring", label_selector="grafana_dashboard=1").items
    assert wanted - {m.metadata.name for m in maps} == set()


def test_helm_is_what_the_checks_used(tools: Tools) -> None:
    assert tools.helm == shutil.which("helm")
