"""Render a host's boot partition: the cloud-init NoCloud seed and the Raspberry Pi boot files.

Pure functions from the inventory to file contents (strings). The image stage writes them onto the
flashed disk's boot partition; the lab writes them into each node's `/boot/firmware/` and its NoCloud
seed directory. What differs between the two is a parameter here, never a branch on "lab".

`user-data` follows the reference platform (section 2.3 of the v1.4 notes): hostname, /etc/hosts,
timezone, locale, the admin users with sudo and keys (no default `ubuntu` user), password logins off,
and, for hosts with a data partition, the `sgdisk` bootcmd that carves it before growpart runs.
The host's SSH host key is pinned: the controller generates it, so first contact is verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from picluster.inventory import Host, Inventory

SEED_FILES = ("user-data", "network-config", "meta-data")
BOOT_FILES = ("config.txt", "cmdline.txt")


@dataclass(frozen=True)
class HostKey:
    """An SSH host key pair in OpenSSH formats (private key PEM text, public key line)."""

    private: str
    public: str
    kind: str = "ed25519"


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (keys stay readable), keys in the order given."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def partition_commands(host: Host) -> tuple[list[list[str]], list[list[str]]]:
    """The bootcmd and runcmd that carve the host's data partition (empty lists when it has none).

    As on the reference platform: convert the boot disk to GPT, move the backup header to the end and
    create an LVM partition from `start` to the end of the disk, before cloud-init's growpart runs.
    Each command is an argv list, which cloud-init runs without a shell: no value becomes code.
    """
    if host.data_partition is None:
        return [], []
    disk = host.boot_disk
    bootcmd = ["cloud-init-per", "once", "addpartition", "sgdisk", disk, "-g", "-e",
               f"-n=0:{host.data_partition.start}:0", "-t", "0:8e00"]
    return [bootcmd], [["partprobe", disk]]


def user_data(inv: Inventory, host: Host, *, host_key: HostKey | None = None,
              partition_disk: bool = True) -> str:
    """The `#cloud-config` user-data of `host`.

    host_key: pin this SSH host key (all other host keys are deleted and none generated).
    partition_disk: include the data-partition bootcmd/runcmd (off where there is no block device,
    as in the lab).
    """
    users: list[dict[str, Any]] = []
    for u in inv.cluster.admin_users:
        entry: dict[str, Any] = {"name": u.name, "primary_group": "users"}
        if u.groups:
            entry["groups"] = list(u.groups)
        entry.update({
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": True,
            "ssh_authorized_keys": u.public_keys(),
        })
        users.append(entry)
    doc: dict[str, Any] = {
        "hostname": host.name,
        "manage_etc_hosts": "localhost",
        "timezone": host.settings.timezone,
        "locale": host.settings.locale,
        # No `default` entry: the image's default user (ubuntu) is not created.
        "users": users,
        "ssh_pwauth": False,
    }
    if host_key is not None:
        doc["ssh_deletekeys"] = True
        doc["ssh_genkeytypes"] = []
        doc["ssh_keys"] = {f"{host_key.kind}_private": host_key.private.rstrip("\n") + "\n",
                           f"{host_key.kind}_public": host_key.public.strip()}
    if partition_disk:
        bootcmd, runcmd = partition_commands(host)
        if bootcmd:
            doc["bootcmd"] = bootcmd
            doc["runcmd"] = runcmd
    if host.wan is not None and host.wan.wifi is not None:
        # The reference gateway reboots once so that its Wi-Fi configuration takes effect.
        doc["power_state"] = {"mode": "reboot"}
    return "#cloud-config\n" + _dump(doc)


def network_config(inv: Inventory, host: Host, *, static_lan: bool = False,
                   wifi_password: str | None = None) -> str:
    """The netplan v2 `network-config` of `host`.

    The gateway always has a static LAN address on eth0 plus its WAN side. Other hosts take DHCP from
    the gateway unless `static_lan` is set (the lab: every node gets its inventory address, no DHCP
    wait, and the inventory MAC stated), in which case their default route and DNS point at the LAN
    gateway, as DHCP would give.
    """
    lan = inv.cluster.lan
    address = f"{host.ip}/{lan.cidr.prefixlen}"
    ethernets: dict[str, Any] = {}
    wifis: dict[str, Any] = {}
    if host.role == "gateway" or static_lan:
        eth0: dict[str, Any] = {"dhcp4": False, "addresses": [address]}
        if static_lan:
            # The inventory's MAC, stated: a lab node's veth would otherwise get a generated address
            # from the node's systemd (a Pi's NIC has its own, which is the inventory's).
            eth0 = {"dhcp4": False, "macaddress": host.mac, "addresses": [address]}
        if host.role != "gateway":
            eth0["routes"] = [{"to": "0.0.0.0/0", "via": str(lan.gateway)}]
            dns = inv.cluster.services.get("dns")
            if dns is not None:
                eth0["nameservers"] = {"addresses": [str(dns)], "search": [inv.cluster.domain]}
        ethernets["eth0"] = eth0
    else:
        ethernets["eth0"] = {"dhcp4": True, "optional": True}
    wan = host.wan if host.role == "gateway" else None
    if wan is not None:
        side: dict[str, Any] = {"optional": True}
        if wan.address is not None:
            side["dhcp4"] = False
            side["addresses"] = [str(wan.address)]
            if wan.gateway is not None:
                side["routes"] = [{"to": "0.0.0.0/0", "via": str(wan.gateway)}]
            if inv.cluster.dns_upstream:
                side["nameservers"] = {"addresses": [str(a) for a in inv.cluster.dns_upstream]}
        else:
            side["dhcp4"] = True
        if wan.wifi is not None:
            if wifi_password is None:
                raise ValueError(f"{host.name}: the Wi-Fi WAN needs its password "
                                 f"(secret {wan.wifi.password_secret!r}) to render network-config")
            side["access-points"] = {wan.wifi.ssid: {"password": wifi_password}}
            wifis[wan.interface] = side
        else:
            ethernets[wan.interface] = side
    doc: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if wifis:
        doc["wifis"] = wifis
    return _dump(doc)


def meta_data(inv: Inventory, host: Host, *, instance_id: str | None = None) -> str:
    """NoCloud `meta-data`: the instance id (stable per cluster and host by default) and hostname."""
    iid = instance_id or f"{inv.cluster.name}-{host.name}"
    return _dump({"instance-id": iid, "local-hostname": host.name})


# The boot partition of Ubuntu Server 20.04 (arm64, preinstalled raspi image), as the reference
# platform starts from. The os stage later appends the cgroup flags to cmdline.txt and gpu_mem to
# config.txt; they are deliberately absent here.
CONFIG_TXT = """\
# Please DO NOT modify this file; if you need to modify the boot config, the
# "usercfg.txt" file is the place to include user changes. Please refer to
# the README file for a description of the various configuration files on
# the boot partition.

# The unusual ordering below is deliberate; older firmwares (in particular the
# version initially shipped with bionic) don't understand the conditional
# [sections] below and simply ignore them. The Pi4 doesn't boot at all with
# firmwares this old so it's safe to place at the top. Of the Pi2 and Pi3, the
# Pi3 uboot happens to work happily on the Pi2, so it needs to go at the bottom
# to support old firmwares.

[pi4]
kernel=uboot_rpi_4.bin
max_framebuffers=2

[pi2]
kernel=uboot_rpi_2.bin

[pi3]
kernel=uboot_rpi_3.bin

[all]
arm_64bit=1
device_tree_address=0x03000000

# The following settings are "defaults" expected to be overridden by the
# included configuration. The only reason they are included is, again, to
# support old firmwares which don't understand the "include" command.

enable_uart=1
cmdline=cmdline.txt

include syscfg.txt
include usercfg.txt
"""

CMDLINE_TXT = ("net.ifnames=0 dwc_otg.lpm_enable=0 console=serial0,115200 console=tty1 "
               "root=LABEL=writable rootfstype=ext4 elevator=deadline rootwait fixrtc\n")


def config_txt() -> str:
    """`config.txt` as on the Ubuntu raspi image (before the os stage adds gpu_mem)."""
    return CONFIG_TXT


def cmdline_txt() -> str:
    """`cmdline.txt` as on the Ubuntu raspi image (one line; before the os stage adds cgroup flags)."""
    return CMDLINE_TXT


def boot_partition(inv: Inventory, host: Host, *, host_key: HostKey | None = None,
                   partition_disk: bool = True, static_lan: bool = False,
                   wifi_password: str | None = None,
                   boot_files: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every file of `host`'s boot partition that we write: name -> content.

    boot_files: config.txt/cmdline.txt taken from a flashed image, when there is one, instead of the
    stock contents.
    """
    ud = user_data(inv, host, host_key=host_key, partition_disk=partition_disk)
    nc = network_config(inv, host, static_lan=static_lan, wifi_password=wifi_password)
    files = {
        "config.txt": config_txt(),
        "cmdline.txt": cmdline_txt(),
        "user-data": ud,
        "network-config": nc,
        "meta-data": meta_data(inv, host),
    }
    if boot_files:
        files.update({k: v for k, v in boot_files.items() if k in BOOT_FILES})
    return files
