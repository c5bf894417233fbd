"""Gate after the k3s stage: the service, its files, graceful node shutdown, and every node Ready.

Where no k3s binary is installed on a node (the k3s stage skipped the install: nothing in reach, see its
report), the checks that need K3S running are an explicit skip with that reason, decided on the node.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from picluster.inventory import Host, Inventory
from picluster.stages import k3s as k3s_stage


def k3s_missing(host: Any) -> str:
    """Return why K3S checks cannot run on this node ("" when the binary is there)."""
    if host.file(k3s_stage.BIN).exists:
        return ""
    return (f"k3s is not installed on {host.backend.get_hostname()}: no binary was in reach of the k3s stage "
            "(no air-gap bundle, get.k3s.io unreachable; see the stage's install step)")


@pytest.fixture
def k3s(host: Any) -> None:
    why = k3s_missing(host)
    if why:
        pytest.skip(why)


def logind_delay(host: Any) -> float:
    out = host.check_output("busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
                            "org.freedesktop.login1.Manager InhibitDelayMaxUSec")
    kind, value = out.split()
    assert kind == "t"
    return int(value) / 1e6


def test_config_yaml(host: Any, node: Host, inventory: Inventory) -> None:
    with host.sudo():
        assert host.file(k3s_stage.CONFIG).content_string == k3s_stage.config_yaml(inventory, node)


def test_kubelet_config_has_the_grace_periods(host: Any, node: Host, inventory: Inventory) -> None:
    with host.sudo():
        text = host.file(k3s_stage.KUBELET_CONFIG).content_string
    assert text == k3s_stage.kubelet_config(inventory, node)
    data = yaml.safe_load(text)
    assert data["kind"] == "KubeletConfiguration"
    assert data["shutdownGracePeriod"] == f"{node.vars['kubelet_shutdown_grace_period']}s"
    assert data["shutdownGracePeriodCriticalPods"] == f"{node.vars['kubelet_shutdown_grace_period_critical_pods']}s"


def test_token_file_is_root_only_and_holds_the_clusters_token(host: Any, inventory: Inventory) -> None:
    import hashlib

    from picluster.secrets import read_secret

    with host.sudo():
        f = host.file(k3s_stage.TOKEN_FILE)
        assert (f.mode, f.user, f.group) == (0o600, "root", "root")
        token = read_secret(k3s_stage.token_secret(inventory))
        if token is None:
            pytest.skip("the cluster token is not in this controller's secrets store: its content is not compared")
        assert f.sha256sum == hashlib.sha256((token + "\n").encode()).hexdigest()


def test_logind_delay_covers_the_grace_period(host: Any, node: Host) -> None:
    assert logind_delay(host) >= node.vars["kubelet_shutdown_grace_period"]


def test_service_enabled_and_running(host: Any, node: Host, k3s: None) -> None:
    service = host.service(k3s_stage.unit_of(node))
    assert service.is_enabled and service.is_running


def test_kubelet_holds_a_delay_lock_for_shutdown(host: Any, k3s: None) -> None:
    with host.sudo():
        listing = host.check_output("systemd-inhibit --list --no-pager --no-legend")
    locks = [line for line in listing.splitlines() if "kubelet" in line.lower() and "shutdown" in line]
    assert locks and all("delay" in line for line in locks), listing


def test_every_node_ready(host: Any, node: Host, inventory: Inventory, k3s: None) -> None:
    if node.name != k3s_stage.primary_server(inventory).name:
        pytest.skip("the nodes are listed through the first server's API")
    with host.sudo():
        nodes = k3s_stage.parse_nodes(host.check_output(f"{k3s_stage.BIN} kubectl get nodes -o json"))
    wanted = [h.name for h in inventory.select(roles=["server", "agent"])]
    assert {n: n in nodes and nodes[n].ready for n in wanted} == dict.fromkeys(wanted, True)


def test_the_servers_admin_kubeconfig_is_root_only(host: Any, node: Host, k3s: None) -> None:
    if node.role != "server":
        pytest.skip("only servers keep the admin kubeconfig")
    f = host.file("/etc/rancher/k3s/k3s.yaml")
    assert f.exists and f.mode == 0o600 and f.user == "root"
