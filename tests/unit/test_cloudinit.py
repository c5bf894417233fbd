"""cloud-init seed and Pi boot files: rendered from the inventory, parsed back, checked key by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from picluster import cloudinit
from picluster.cloudinit import HostKey
from picluster.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q admin@laptop"
HOST_KEY = HostKey(
    private="-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    public="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHPHk/u+JjX2GRGvbmloGyVBe4ehCrpSylXgOdSEQmzj node1",
)


def _inventory(tmp_path: Path, name: str) -> Inventory:
    """A repo inventory with literal admin keys (the key files it names need not exist here)."""
    data = yaml.safe_load((REPO / "hosts" / name).read_text())
    data["cluster"]["admin_users"] = [
        {"name": u["name"], **({"groups": u["groups"]} if u.get("groups") else {}), "ssh_keys": [KEY]}
        for u in data["cluster"]["admin_users"]
    ]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


@pytest.fixture
def real(tmp_path: Path) -> Inventory:
    return _inventory(tmp_path, "inventory.yml")


@pytest.fixture
def lab(tmp_path: Path) -> Inventory:
    return _inventory(tmp_path, "lab.yml")


def _user_data(text: str) -> dict[str, Any]:
    assert text.startswith("#cloud-config\n"), "cloud-init ignores user-data without its header"
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_user_data_creates_admins_with_sudo_and_keys_and_no_default_user(real: Inventory) -> None:
    host = real.hosts["node2"]
    ud = _user_data(cloudinit.user_data(real, host))
    assert ud["hostname"] == "node2"
    assert ud["manage_etc_hosts"] == "localhost"
    assert ud["timezone"] == host.settings.timezone
    assert ud["locale"] == host.settings.locale
    assert ud["ssh_pwauth"] is False
    names = [u["name"] for u in ud["users"]]
    assert names == [u.name for u in real.cluster.admin_users]
    assert "default" not in ud["users"], "the image's default user must not be created"
    for user in ud["users"]:
        assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
        assert user["lock_passwd"] is True
        assert user["ssh_authorized_keys"] == [KEY]
        assert user["shell"] == "/bin/bash"


def test_user_data_pins_the_host_key_and_generates_no_other(real: Inventory) -> None:
    ud = _user_data(cloudinit.user_data(real, real.hosts["node1"], host_key=HOST_KEY))
    assert ud["ssh_keys"] == {"ed25519_private": HOST_KEY.private, "ed25519_public": HOST_KEY.public}
    assert ud["ssh_deletekeys"] is True
    assert ud["ssh_genkeytypes"] == []
    assert "ssh_keys" not in _user_data(cloudinit.user_data(real, real.hosts["node1"]))


def test_data_partition_bootcmd_is_the_reference_one_and_can_be_left_out(real: Inventory) -> None:
    node = real.hosts["node1"]
    assert node.data_partition is not None
    ud = _user_data(cloudinit.user_data(real, node))
    # argv lists, which cloud-init runs without a shell
    assert ud["bootcmd"] == [["cloud-init-per", "once", "addpartition", "sgdisk", "/dev/sda", "-g", "-e",
                              "-n=0:30G:0", "-t", "0:8e00"]]
    assert ud["runcmd"] == [["partprobe", "/dev/sda"]]
    lab_like = _user_data(cloudinit.user_data(real, node, partition_disk=False))
    assert "bootcmd" not in lab_like and "runcmd" not in lab_like
    gateway = _user_data(cloudinit.user_data(real, real.hosts["gateway"]))
    assert "bootcmd" not in gateway, "a host without data_partition gets no partitioning"


def test_wifi_gateway_reboots_once_nodes_do_not(real: Inventory) -> None:
    assert _user_data(cloudinit.user_data(real, real.hosts["gateway"]))["power_state"] == {"mode": "reboot"}
    assert "power_state" not in _user_data(cloudinit.user_data(real, real.hosts["node1"]))


def test_network_config_nodes_dhcp_gateway_static_with_its_wan(real: Inventory) -> None:
    node = yaml.safe_load(cloudinit.network_config(real, real.hosts["node3"]))
    assert node == {"version": 2, "ethernets": {"eth0": {"dhcp4": True, "optional": True}}}
    gw = yaml.safe_load(cloudinit.network_config(real, real.hosts["gateway"], wifi_password="s3cret"))
    assert gw["version"] == 2
    assert gw["ethernets"]["eth0"] == {"dhcp4": False, "addresses": ["10.0.0.1/24"]}
    wlan = gw["wifis"]["wlan0"]
    assert wlan["addresses"] == ["192.168.1.11/24"]
    assert wlan["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.1.1"}]
    assert wlan["access-points"] == {"homelab": {"password": "s3cret"}}
    assert wlan["nameservers"]["addresses"] == [str(a) for a in real.cluster.dns_upstream]
    with pytest.raises(ValueError, match="password"):
        cloudinit.network_config(real, real.hosts["gateway"])


def test_lab_network_config_is_static_for_every_host(lab: Inventory) -> None:
    for host in lab.hosts.values():
        nc = yaml.safe_load(cloudinit.network_config(lab, host, static_lan=True))
        eth0 = nc["ethernets"]["eth0"]
        assert eth0["dhcp4"] is False
        assert eth0["addresses"] == [f"{host.ip}/24"]
        assert eth0["macaddress"] == host.mac
        assert "wifis" not in nc
        if host.role == "gateway":
            assert "routes" not in eth0
        else:
            assert eth0["routes"] == [{"to": "0.0.0.0/0", "via": "10.250.0.1"}]
            assert eth0["nameservers"] == {"addresses": ["10.250.0.1"], "search": ["lab.picluster.test"]}
        for value in yaml.safe_dump(nc).split():
            assert not value.startswith("10.0.0."), "a lab seed must name lab addresses only"


def test_meta_data_names_instance_and_host(lab: Inventory) -> None:
    md = yaml.safe_load(cloudinit.meta_data(lab, lab.hosts["node4"]))
    assert md == {"instance-id": "picluster-lab-node4", "local-hostname": "node4"}
    assert yaml.safe_load(cloudinit.meta_data(lab, lab.hosts["node4"], instance_id="x"))["instance-id"] == "x"


def test_pi_boot_files_are_the_stock_ones_without_cgroup_flags() -> None:
    cmdline = cloudinit.cmdline_txt()
    assert cmdline.endswith("\n") and cmdline.count("\n") == 1, "cmdline.txt is one line"
    assert "root=LABEL=writable" in cmdline.split()
    assert not any(arg.startswith(("cgroup_", "cgroup_enable")) for arg in cmdline.split())
    config = cloudinit.config_txt()
    assert "cmdline=cmdline.txt" in config.splitlines()
    assert "arm_64bit=1" in config.splitlines()
    assert not any(line.startswith("gpu_mem") for line in config.splitlines())


def test_boot_partition_holds_every_file_and_takes_image_boot_files(lab: Inventory) -> None:
    host = lab.hosts["node1"]
    files = cloudinit.boot_partition(lab, host, host_key=HOST_KEY, partition_disk=False, static_lan=True)
    assert set(files) == {"config.txt", "cmdline.txt", "user-data", "network-config", "meta-data"}
    assert "bootcmd" not in _user_data(files["user-data"])
    flashed = cloudinit.boot_partition(lab, host, boot_files={"cmdline.txt": "from the image\n",
                                                              "user-data": "ignored"})
    assert flashed["cmdline.txt"] == "from the image\n"
    assert flashed["user-data"].startswith("#cloud-config"), "only boot files come from an image"
