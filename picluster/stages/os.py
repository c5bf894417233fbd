"""The `os` stage: every Pi (gateway included) prepared for K3S, from the inventory.

Cloud-init finished; hostname, /etc/hosts, time zone; snapd gone; packages; chrony (the gateway serves
the LAN, the others follow it); cgroup flags on the kernel command line, with one reboot when they
changed; kernel modules and sysctls for K3S; swap off; multipath kept off the disks (Longhorn); the
data partition as LVM at /storage; SSH hardened; logind lets the kubelet delay shutdown.

Steps are grouped into batches (one SSH round trip each) where their facts are independent, so a
no-op run costs a handful of round trips per host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep
from picluster.stages.templates import render
from picluster.state import Apt, CmdlineArgs, Directory, File, Line, Service
from picluster.state.batch import Batch
from picluster.state.by_virt import FileByVirt
from picluster.state.cloud_init import CloudInitDone
from picluster.state.dpkg import DpkgConsistent
from picluster.state.hostname import Hostname
from picluster.state.hosts_entry import HostsEntry
from picluster.state.reboot import Reboot
from picluster.state.shared_kernel import ModulesLoaded, SysctlsSet
from picluster.state.skip import OnlyIf
from picluster.state.snaps import SnapsRemoved
from picluster.state.sshd import SshdHardening
from picluster.state.storage import DataVolume
from picluster.state.swap import SwapOff
from picluster.state.timezone import Timezone

# What the stage's own steps need; the inventory's `packages` var adds to it.
BASE_PACKAGES = ("chrony", "fake-hwclock", "open-iscsi", "nfs-common", "lvm2")
CGROUP_ARGS = ("cgroup_enable=cpuset", "cgroup_memory=1", "cgroup_enable=memory")
MODULES = ("br_netfilter", "overlay", "iscsi_tcp")
SYSCTLS: tuple[tuple[str, int], ...] = (
    ("net.ipv4.ip_forward", 1),
    ("net.ipv6.conf.all.forwarding", 1),
    ("net.bridge.bridge-nf-call-iptables", 1),
    ("net.bridge.bridge-nf-call-ip6tables", 1),
    ("fs.inotify.max_user_instances", 512),
    ("fs.inotify.max_user_watches", 256000),
)

CHRONY_CONF = "/etc/chrony/chrony.conf"
CHRONY_DEFAULT = "/etc/default/chrony"
CHRONY_DROPIN_DIR = "/etc/systemd/system/chrony.service.d"
CHRONY_DROPIN = f"{CHRONY_DROPIN_DIR}/picluster.conf"
MULTIPATH_CONF = "/etc/multipath.conf"
LOGIND_DIR = "/etc/systemd/logind.conf.d"
# Drop-ins merge in file-name order across /etc and /usr/lib, the last one wins: ours sorts after
# unattended-upgrades' own (InhibitDelayMaxSec=30) and after the kubelet's 99-kubelet.conf.
UNATTENDED_UPGRADES_DROPIN = "unattended-upgrades-logind-maxdelay.conf"
LOGIND_DROPIN = f"{LOGIND_DIR}/zz-picluster-inhibit-delay.conf"
DATA_VG, DATA_LV, DATA_MOUNT = "vg_local", "vg_local_lv_storage", "/storage"   # as the reference's local_storage.yml
CONFIG_TXT = "/boot/firmware/config.txt"
GPU_MEM = "gpu_mem=16"      # the reference's: a headless Pi gives the GPU the least memory
ISCSI_INITIATOR = "/etc/iscsi/initiatorname.iscsi"
IQN_DATE = "2021-07"        # the reference's IQN naming date (iqn.2021-07.com.ricsanfre:<host>)
PI_SCRIPTS = Path(__file__).resolve().parents[2] / "hosts" / "scripts"
PI_HELPERS = ("pi_temp", "pi_throttling")
NOT_A_CONTAINER = "! systemd-detect-virt --quiet --container"


def packages(host: Host) -> list[str]:
    """Return the packages the os stage installs on `host`: the stage's own, then the inventory's."""
    out = list(BASE_PACKAGES)
    out += [p for p in host.settings.packages if p not in out]
    return out


def fqdn(inv: Inventory, host: Host) -> str:
    """Return the host's fully qualified name in the cluster's domain."""
    return f"{host.name}.{inv.cluster.domain}"


def chrony_conf(inv: Inventory, host: Host) -> str:
    """Return chrony.conf: the gateway serves the LAN from its upstream, the others follow the gateway."""
    ntp = inv.cluster.services.get("ntp", inv.cluster.lan.gateway)
    return render("chrony.conf.j2", inventory_path=inv.path.name, serve=host.role == "gateway",
                  upstream=host.settings.ntp_upstream, lan_net=str(inv.cluster.lan.cidr),
                  server=str(ntp), own_clock=True)


def chrony_default(container: str) -> str:
    """Return /etc/default/chrony: in a container chronyd must not set the (host's) clock."""
    return render("chrony-default.j2", own_clock=not container, container=container)


def chrony_dropin(container: str) -> str:
    """Return chrony.service's drop-in: in a container, lift its CAP_SYS_TIME condition (chronyd runs -x)."""
    if not container:
        return "# Managed by picluster (os stage): this host owns its clock; nothing to override.\n"
    return ("# Managed by picluster (os stage): this host is a container without CAP_SYS_TIME; chronyd runs\n"
            "# with -x (see /etc/default/chrony) and needs no clock capability.\n[Unit]\nConditionCapability=\n")


def logind_dropin(host: Host) -> str:
    """Return the logind drop-in: InhibitDelayMaxSec = the kubelet's shutdown grace period."""
    shutdown = host.settings.shutdown
    return render("logind-inhibit.conf.j2", grace=shutdown.grace, delay=shutdown.logind_delay,
                  after=UNATTENDED_UPGRADES_DROPIN)


def iscsi_initiator_name(inv: Inventory, host: Host) -> str:
    """Return the host's iSCSI initiator name: the reference's pattern with the cluster's domain reversed."""
    authority = ".".join(reversed(inv.cluster.domain.split(".")))
    return f"iqn.{IQN_DATE}.{authority}:{host.name}"


def initiator_file(inv: Inventory, host: Host) -> str:
    """Return /etc/iscsi/initiatorname.iscsi for `host`."""
    return ("## Managed by picluster (os stage): this host's iSCSI initiator name (Longhorn's volumes)\n"
            f"InitiatorName={iscsi_initiator_name(inv, host)}\n")


def pi_helpers() -> list[AnyStep]:
    """Return the reference's helper scripts: pi_temp (CPU and GPU temperature), pi_throttling."""
    return [File(f"/usr/local/bin/{name}", (PI_SCRIPTS / name).read_bytes(), mode=0o755) for name in PI_HELPERS]


def sshd_dropin(inv: Inventory) -> str:
    """Return the SSH hardening drop-in (root keeps key-only login when picluster itself connects as root)."""
    user = inv.cluster.automation_user
    return render("sshd-hardening.conf.j2", user=user, root_login="prohibit-password" if user == "root" else "no")


def automation_keys(inv: Inventory) -> list[str]:
    """Return the public keys of the user picluster connects as."""
    user = next(u for u in inv.cluster.admin_users if u.name == inv.cluster.automation_user)
    return user.public_keys()


def host_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    """Return the os stage's steps for one host, in order."""
    steps: list[AnyStep] = [
        CloudInitDone(),
        Batch("hostname, /etc/hosts, time zone", [
            Hostname(host.name),
            HostsEntry("127.0.1.1", [fqdn(inv, host), host.name]),
            Timezone(host.settings.timezone),
        ]),
        Batch("dpkg consistent, snapd removed", [DpkgConsistent(), SnapsRemoved()]),
        Apt(packages(host)),
        Batch("kernel cmdline and gpu_mem, reboot if they changed", [
            CmdlineArgs(list(CGROUP_ARGS)),
            Line(CONFIG_TXT, GPU_MEM, regex=r"^gpu_mem=", reboot=True),
            Reboot(),
        ]),
        Batch("kernel modules, sysctls, swap", [ModulesLoaded(MODULES), SysctlsSet(SYSCTLS), SwapOff()]),
        Batch("chrony, multipath, logind files", [
            File(CHRONY_CONF, chrony_conf(inv, host)),
            FileByVirt(CHRONY_DEFAULT, chrony_default),
            Directory(CHRONY_DROPIN_DIR),
            FileByVirt(CHRONY_DROPIN, chrony_dropin),
            File(MULTIPATH_CONF, render("multipath.conf.j2")),
            Directory(LOGIND_DIR),
            File(LOGIND_DROPIN, logind_dropin(host)),
            File(ISCSI_INITIATOR, initiator_file(inv, host), mode=0o600),
            *pi_helpers(),
        ]),
        Batch("chrony, multipathd, logind services", [
            Service("chrony", enabled=True, running=True, restart_on=[CHRONY_CONF, CHRONY_DEFAULT, CHRONY_DROPIN]),
            Service("multipathd", restart_on=[MULTIPATH_CONF]),
            Service("systemd-logind", restart_on=[LOGIND_DROPIN]),
            OnlyIf(Service("iscsid", enabled=True, running=True, restart_on=[ISCSI_INITIATOR]), NOT_A_CONTAINER,
                   "iscsid needs the kernel's iSCSI transport, which a container does not get"),
        ]),
    ]
    if host.data_partition is not None:
        steps.append(DataVolume(host.data_partition.device, vg=DATA_VG, lv=DATA_LV, mountpoint=DATA_MOUNT))
    steps.append(SshdHardening(sshd_dropin(inv), user=inv.cluster.automation_user, keys=automation_keys(inv)))
    return steps


def plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    """Return the planner `cluster.up` and `os.apply` give the runner."""
    return lambda host: host_steps(inv, host)
