"""Gate after the os stage: what it must have left on every host, one resource per check.

Where the host is a container (the lab), what belongs to the host's kernel, clock or disks is an
explicit skip with the reason, decided from `systemd-detect-virt --container` on the node.
"""

from __future__ import annotations

from typing import Any

import pytest

from picluster.inventory import Host, Inventory
from picluster.stages import os as os_stage
from picluster.state.kernel import CMDLINE
from picluster.state.shared_kernel import MODULES_FILE, SYSCTL_FILE


def container(host: Any) -> str:
    """Return the container type of the host, or "" when it is not one."""
    result = host.run("systemd-detect-virt --container")
    return result.stdout.strip() if result.rc == 0 else ""


def test_etc_hostname(host: Any, node: Host) -> None:
    assert host.file("/etc/hostname").content_string.strip() == node.name


def test_etc_hosts_names_the_host_first(host: Any, node: Host, inventory: Inventory) -> None:
    from picluster.state.hosts_entry import entries

    first = entries(host.file("/etc/hosts").content_string, "127.0.1.1")[0][1]
    assert first == [f"{node.name}.{inventory.cluster.domain}", node.name]


def test_timezone(host: Any, node: Host) -> None:
    zone = node.vars["timezone"]
    assert host.file("/etc/timezone").content_string.strip() == zone
    assert host.file("/etc/localtime").linked_to == f"/usr/share/zoneinfo/{zone}"


def test_snapd_is_gone(host: Any) -> None:
    assert not host.package("snapd").is_installed


@pytest.mark.parametrize("package", os_stage.BASE_PACKAGES)
def test_package_installed(host: Any, package: str) -> None:
    assert host.package(package).is_installed


def test_inventory_packages_installed(host: Any, node: Host) -> None:
    missing = [p for p in node.vars["packages"] if not host.package(p).is_installed]
    assert not missing, missing


def test_chrony_config(host: Any, node: Host, inventory: Inventory) -> None:
    assert host.file(os_stage.CHRONY_CONF).content_string == os_stage.chrony_conf(inventory, node)


def test_chrony_running(host: Any) -> None:
    service = host.service("chrony")
    assert service.is_running and service.is_enabled


def test_chrony_follows_the_gateway(host: Any, node: Host, inventory: Inventory) -> None:
    if node.role == "gateway":
        pytest.skip("the gateway is the LAN's server (checked by the gateway gate)")
    ntp = str(inventory.cluster.services.get("ntp", inventory.cluster.lan.gateway))
    assert ntp in host.check_output("chronyc -n sources")


@pytest.mark.parametrize("arg", os_stage.CGROUP_ARGS)
def test_cmdline_file_has_cgroup_flag(host: Any, arg: str) -> None:
    assert arg in host.file(CMDLINE).content_string.split()


@pytest.mark.parametrize("arg", os_stage.CGROUP_ARGS)
def test_running_kernel_has_cgroup_flag(host: Any, arg: str) -> None:
    kind = container(host)
    if kind:
        pytest.skip(f"/proc/cmdline is the host's kernel's in a container ({kind})")
    assert arg in host.file("/proc/cmdline").content_string.split()


@pytest.mark.parametrize("module", os_stage.MODULES)
def test_module_persisted(host: Any, module: str) -> None:
    assert module in host.file(MODULES_FILE).content_string.split()


@pytest.mark.parametrize("module", os_stage.MODULES)
def test_module_loaded(host: Any, module: str) -> None:
    loaded = host.file(f"/sys/module/{module}").is_directory
    kind = container(host)
    if not loaded and kind:
        pytest.skip(f"{module} is not loaded by the host's kernel, and a container ({kind}) cannot load it")
    assert loaded


@pytest.mark.parametrize(("key", "value"), os_stage.SYSCTLS, ids=[k for k, _ in os_stage.SYSCTLS])
def test_sysctl_persisted(host: Any, key: str, value: int) -> None:
    assert f"{key} = {value}" in host.file(SYSCTL_FILE).content_string.splitlines()


@pytest.mark.parametrize(("key", "value"), os_stage.SYSCTLS, ids=[k for k, _ in os_stage.SYSCTLS])
def test_sysctl_runtime(host: Any, key: str, value: int) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    now = host.file(path).content_string.strip() if host.file(path).exists else None
    kind = container(host)
    with host.sudo():
        writable = host.run(f"test -w {path}").rc == 0
    if kind and not writable and now != str(value):
        pytest.skip(f"{key} is the host kernel's and read-only in this container ({kind})")
    assert now == str(value)


def test_swap_off(host: Any) -> None:
    active = host.file("/proc/swaps").content_string.splitlines()[1:]
    kind = container(host)
    if active and kind:
        pytest.skip(f"/proc/swaps lists the host's swap in a container ({kind})")
    assert not active


def test_no_swap_in_fstab(host: Any) -> None:
    from picluster.state.swap import SWAP_LINE

    assert not [line for line in host.file("/etc/fstab").content_string.splitlines() if SWAP_LINE.match(line)]


def test_multipath_blacklists_the_disks(host: Any) -> None:
    assert 'devnode "^sd[a-z0-9]+"' in host.file(os_stage.MULTIPATH_CONF).content_string


def test_logind_lets_the_kubelet_delay_shutdown(host: Any, node: Host) -> None:
    usec = host.check_output("busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
                             "org.freedesktop.login1.Manager InhibitDelayMaxUSec")
    assert int(usec.split()[1]) >= node.settings.shutdown.logind_delay * 1_000_000


def test_logind_dropin_sorts_last(host: Any) -> None:
    names = host.check_output("ls /etc/systemd/logind.conf.d /usr/lib/systemd/logind.conf.d 2>/dev/null; true")
    ours = os_stage.LOGIND_DROPIN.rsplit("/", 1)[1]
    conf = sorted(n for n in names.split() if n.endswith(".conf"))
    assert conf and conf[-1] == ours


@pytest.mark.parametrize(("option", "value"), [
    ("passwordauthentication", "no"), ("kbdinteractiveauthentication", "no"), ("permitemptypasswords", "no"),
    ("pubkeyauthentication", "yes"), ("x11forwarding", "no"), ("usedns", "no"),
])
def test_sshd_effective_option(host: Any, option: str, value: str) -> None:
    with host.sudo():
        effective = host.check_output("sshd -T")
    assert f"{option} {value}" in effective.splitlines()


def test_sshd_no_root_login(host: Any, inventory: Inventory) -> None:
    with host.sudo():
        effective = host.check_output("sshd -T").splitlines()
    want = "prohibit-password" if inventory.cluster.automation_user == "root" else "no"
    assert f"permitrootlogin {want}" in effective


def test_data_volume_mounted(host: Any, node: Host) -> None:
    if node.data_partition is None:
        pytest.skip(f"{node.name} declares no data partition")
    kind = container(host)
    if kind and not host.file(node.data_partition.device).exists:
        pytest.skip(f"no block device {node.data_partition.device} in a container ({kind})")
    mount = host.mount_point(os_stage.DATA_MOUNT)
    assert mount.exists and mount.filesystem == "ext4"


def test_gpu_memory_is_the_references(host: Any) -> None:
    lines = host.file(os_stage.CONFIG_TXT).content_string.splitlines()
    assert [line for line in lines if line.startswith("gpu_mem=")] == [os_stage.GPU_MEM]


def test_iscsi_initiator_name_is_the_hosts(host: Any, node: Host, inventory: Inventory) -> None:
    f = host.file(os_stage.ISCSI_INITIATOR)
    assert f.mode == 0o600 and f.user == "root"
    assert host.run(f"sudo cat {os_stage.ISCSI_INITIATOR}").stdout == os_stage.initiator_file(inventory, node)


def test_iscsid_enabled_and_running(host: Any) -> None:
    kind = container(host)
    if kind:
        pytest.skip(f"iscsid needs the kernel's iSCSI transport, which a container ({kind}) does not get")
    service = host.service("iscsid")
    assert service.is_enabled and service.is_running


@pytest.mark.parametrize("helper", os_stage.PI_HELPERS)
def test_pi_helper_installed(host: Any, helper: str) -> None:
    f = host.file(f"/usr/local/bin/{helper}")
    assert f.is_file and f.mode == 0o755
    assert f.content == (os_stage.PI_SCRIPTS / helper).read_bytes()
