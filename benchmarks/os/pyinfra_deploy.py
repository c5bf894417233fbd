"""The os and gateway stages as a pyinfra deploy, step for step as playbook.yml (benchmarks/os/run.py).

Run by pyinfra 3.x in its own venv (never imported by picluster). Files are the ones picluster renders
(files/<host>/...), so all three tools converge to the same state; pyinfra's builtin operations and facts
only, plus one reboot operation that waits for a new boot id (as Ansible's reboot module does), since
pyinfra's own compares /proc/uptime, which a container shares with its host.
"""

from __future__ import annotations

import shlex
import time
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

d = host.data
name = host.name
local = f"{d.files_dir}/{name}"
is_gateway = d.role == "gateway"


def fact(command: str) -> str:
    """The stdout of a command on the host, read as a fact (never a change)."""
    return (host.get_fact(Command, command=f"{{ {command}; }} 2>/dev/null || true") or "").strip()


@operation()
def reboot_and_wait(timeout: float = 600) -> object:
    """Reboot now and wait until the host answers with a new boot id."""
    boot_id = "cat /proc/sys/kernel/random/boot_id"
    before: list[str] = []

    # pyinfra passes (state, host) to a FunctionCommand's function when it names them so
    def remember(state: object, host: Any) -> None:
        before.append((host.get_fact(Command, command=boot_id) or "").strip())

    def wait(state: object, host: Any) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(1)
        host.disconnect()
        while time.monotonic() < deadline:
            host.connect(show_errors=False)
            if host.connected:
                now = host.get_fact(Command, command=f"{boot_id} # {time.monotonic()}")  # never a cached fact
                if now and now.strip() != before[0]:
                    return
                host.disconnect()
            time.sleep(1)
        raise RuntimeError(f"{host.name} did not come back within {timeout:.0f}s")

    yield FunctionCommand(remember, (), {})
    yield StringCommand("( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &")
    yield FunctionCommand(wait, (), {})


# --- os stage --------------------------------------------------------------------------------------

# cloud-init finished: the same cheap test picluster makes (the result file), `--wait` only without it
fact("test -e /run/cloud-init/result.json || timeout 600 cloud-init status --wait >/dev/null")
container = fact("systemd-detect-virt --container") not in ("", "none")

server.hostname(name="hostname", hostname=name)
files.line(name="/etc/hosts", path="/etc/hosts", line=r"^127\.0\.1\.1\s.*$",
           replace=f"127.0.1.1 {name}.{d.domain} {name}")
files.link(name="timezone link", path="/etc/localtime", target=f"/usr/share/zoneinfo/{d.timezone}", force=True)
files.put(name="timezone name", src=StringIO(f"{d.timezone}\n"), dest="/etc/timezone")
if fact("dpkg --audit | head -1"):
    server.shell(name="dpkg consistent", commands=["dpkg --configure -a"])
if fact("dpkg-query -W -f '${db:Status-Status}' snapd") == "installed":
    server.shell(name="remove snaps and snapd", commands=[
        "for r in 1 2 3; do for s in $(snap list 2>/dev/null | awk 'NR > 1 {print $1}'); do "
        "snap remove --purge \"$s\" || true; done; done",
        "apt-get -y purge --autoremove snapd",
    ])
apt.packages(name="packages", packages=list(d.packages), no_recommends=True, update=True, cache_time=3600)

cgroup = "cgroup_enable=cpuset cgroup_memory=1 cgroup_enable=memory"
cmdline_changed = False
if cgroup not in fact("cat /boot/firmware/cmdline.txt"):
    cmdline_changed = server.shell(name="cgroup flags on the kernel command line",
                                   commands=[f"sed -i '1 s/$/ {cgroup}/' /boot/firmware/cmdline.txt"]).did_change
gpu = files.line(name="gpu_mem in config.txt", path="/boot/firmware/config.txt", line="^gpu_mem=.*$",
                 replace="gpu_mem=16")
reboot_and_wait(name="reboot for the cmdline and config.txt",
                _if=lambda: bool(cmdline_changed and cmdline_changed()) or gpu.did_change())

for module in ("br_netfilter", "overlay", "iscsi_tcp"):
    files.line(name=f"kernel module {module} persisted", path="/etc/modules-load.d/picluster.conf",
               line=f"^{module}$", replace=module)
    if not container and not fact(f"test -d /sys/module/{module} && echo loaded"):
        server.shell(name=f"kernel module {module} loaded", commands=[f"modprobe {module}"])
for key, value in d.sysctls.items():
    files.line(name=f"sysctl {key} persisted", path="/etc/sysctl.d/90-picluster.conf",
               line=rf"^\s*{key.replace('.', '[.]')}\s*=.*$", replace=f"{key} = {value}")
    proc = "/proc/sys/" + key.replace(".", "/")
    if fact(f'[ "$(sysctl -n {key})" != "{value}" ] && [ -w {proc} ] && echo differs'):
        server.shell(name=f"sysctl {key} now", commands=[f"sysctl -q -w {key}={value}"])
if not container and fact("tail -n +2 /proc/swaps"):
    server.shell(name="swap off", commands=["swapoff -a"])
files.replace(name="no swap in fstab", path="/etc/fstab", text=r"^(\s*[^#[:space:]]+\s+\S+\s+swap\s.*)$",
              replace=r"# \1", extended_regex=True)

for directory in ("/etc/systemd/system/chrony.service.d", "/etc/systemd/logind.conf.d"):
    files.directory(name=f"directory {directory}", path=directory, mode="755")
variant = "container" if container else "host"
chrony = [
    files.put(name="chrony.conf", src=f"{local}/etc/chrony/chrony.conf", dest="/etc/chrony/chrony.conf",
              mode="644"),
    files.put(name="chrony options", src=f"{local}/etc/default/chrony.{variant}", dest="/etc/default/chrony",
              mode="644"),
    files.put(name="chrony unit drop-in", src=f"{local}/etc/systemd/system/chrony.service.d/picluster.conf.{variant}",
              dest="/etc/systemd/system/chrony.service.d/picluster.conf", mode="644"),
]
multipath = files.put(name="multipath", src=f"{local}/etc/multipath.conf", dest="/etc/multipath.conf", mode="644")
logind = files.put(name="logind drop-in", src=f"{local}/etc/systemd/logind.conf.d/zz-picluster-inhibit-delay.conf",
                   dest="/etc/systemd/logind.conf.d/zz-picluster-inhibit-delay.conf", mode="644")
initiator = files.put(name="iSCSI initiator name", src=f"{local}/etc/iscsi/initiatorname.iscsi",
                      dest="/etc/iscsi/initiatorname.iscsi", mode="600")
for helper in ("pi_temp", "pi_throttling"):
    files.put(name=helper, src=f"{local}/usr/local/bin/{helper}", dest=f"/usr/local/bin/{helper}", mode="755")

systemd.service(name="restart chrony", service="chrony", restarted=True, daemon_reload=True,
                _if=any_changed(*chrony))
server.shell(name="restart multipathd", commands=["systemctl is-active -q multipathd && systemctl restart multipathd "
                                                  "|| true"], _if=multipath.did_change)
systemd.service(name="restart logind", service="systemd-logind", restarted=True, _if=logind.did_change)
systemd.service(name="chrony running", service="chrony", running=True, enabled=True)
if not container:
    systemd.service(name="iscsid running", service="iscsid", running=True, enabled=True)
    systemd.service(name="restart iscsid", service="iscsid", restarted=True, _if=initiator.did_change)

if d.get("data_device"):
    dev = d.data_device
    if fact(f"test -b {shlex.quote(dev)} && echo present"):
        server.shell(name="data volume", commands=[
            f"pvs {dev} >/dev/null 2>&1 || {{ pvcreate -q {dev}; vgcreate -q vg_local {dev}; }}",
            "lvs vg_local/lv_storage >/dev/null 2>&1 || { lvcreate -q -y -l 100%VG -n lv_storage vg_local; "
            "mkfs.ext4 -q /dev/vg_local/lv_storage; }",
            "grep -q ' /storage ' /etc/fstab || echo '/dev/vg_local/lv_storage /storage ext4 defaults 0 2' "
            ">> /etc/fstab",
            "findmnt /storage >/dev/null || { mkdir -p /storage; mount /storage; }",
        ])
    elif not container:
        raise RuntimeError(f"{name}: no {dev}")

sshd = files.put(name="sshd hardening", src=f"{local}/etc/ssh/sshd_config.d/01-picluster-hardening.conf",
                 dest="/etc/ssh/sshd_config.d/01-picluster-hardening.conf", mode="644")
server.shell(name="reload sshd", commands=["sshd -t && systemctl try-reload-or-restart ssh.service"],
             _if=sshd.did_change)

# --- gateway stage ---------------------------------------------------------------------------------

if is_gateway:
    dnsmasq = files.put(name="dnsmasq.conf", src=f"{local}/etc/dnsmasq.conf", dest="/etc/dnsmasq.conf", mode="644")
    apt.packages(name="gateway packages", packages=["nftables", "dnsmasq", "curl", "gnupg"], no_recommends=True)
    files.line(name="ip forwarding persisted", path="/etc/sysctl.d/90-picluster.conf",
               line=r"^\s*net[.]ipv4[.]ip_forward\s*=.*$", replace="net.ipv4.ip_forward = 1")
    if fact('[ "$(sysctl -n net.ipv4.ip_forward)" != 1 ] && [ -w /proc/sys/net/ipv4/ip_forward ] && echo differs'):
        server.shell(name="ip forwarding now", commands=["sysctl -q -w net.ipv4.ip_forward=1"])
    nft = files.put(name="nftables ruleset", src=f"{local}/etc/nftables.conf", dest="/etc/nftables.conf", mode="755")
    server.shell(name="apply nftables", commands=["nft -c -f /etc/nftables.conf && nft -f /etc/nftables.conf"],
                 _if=nft.did_change)
    if fact("systemctl is-enabled nftables") != "enabled":
        server.shell(name="nftables at boot", commands=["systemctl enable nftables"])
    systemd.service(name="restart dnsmasq", service="dnsmasq", restarted=True, _if=dnsmasq.did_change)
    systemd.service(name="dnsmasq running", service="dnsmasq", running=True, enabled=True)
    if not fact("test -x /lib/systemd/systemd-resolved -o -x /usr/lib/systemd/systemd-resolved && echo yes"):
        apt.packages(name="systemd-resolved package", packages=["systemd-resolved"], no_recommends=True)
    files.directory(name="resolved drop-in directory", path="/etc/systemd/resolved.conf.d", mode="755")
    resolved = files.put(name="resolved drop-in", src=f"{local}/etc/systemd/resolved.conf.d/picluster.conf",
                         dest="/etc/systemd/resolved.conf.d/picluster.conf", mode="644")
    systemd.service(name="restart resolved", service="systemd-resolved", restarted=True, _if=resolved.did_change)
    systemd.service(name="resolved running", service="systemd-resolved", running=True, enabled=True)
    systemd.service(name="chrony serving the LAN", service="chrony", running=True, enabled=True)
    if fact(f"getent ahosts {shlex.quote(d.fluentbit_host)} >/dev/null && echo reachable"):
        server.shell(name="fluent-bit key", commands=[
            f"test -e /usr/share/keyrings/fluent-bit-keyring.gpg || curl -fsSL {d.fluentbit_key_url} | "
            "gpg --dearmor > /usr/share/keyrings/fluent-bit-keyring.gpg"])
        apt.repo(name="fluent-bit repository", filename="fluent-bit",
                 src=f"deb [signed-by=/usr/share/keyrings/fluent-bit-keyring.gpg] {d.fluentbit_url}/debian/bookworm "
                     "bookworm main")
        apt.packages(name="fluent-bit package", packages=["fluent-bit"], update=True)
        systemd.service(name="fluent-bit service", service="fluent-bit", running=True, enabled=True)
