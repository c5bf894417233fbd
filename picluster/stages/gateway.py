"""The `gateway` stage: the LAN's router, firewall, DHCP/DNS server, NTP server and external log shipper.

nftables from the inventory's LAN/WAN interfaces; IP forwarding; dnsmasq with one DHCP reservation per
host and a DNS record for every host and every service of the registry; systemd-resolved pointed at
dnsmasq; chrony serving the LAN (its file comes from the os stage); fluent-bit from its vendor apt
repository, as an external node of the cluster's logging and metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from picluster import envfile, secrets
from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep
from picluster.stages import os as os_stage
from picluster.stages.templates import render
from picluster.state import Apt, Directory, File, Service
from picluster.state.apt_repo import AptRepository
from picluster.state.batch import Batch
from picluster.state.checked_file import CheckedFile
from picluster.state.nftables import NftRuleset
from picluster.state.shared_kernel import SysctlsSet
from picluster.state.skip import NotConfigured, OnlyIf

PACKAGES = ("nftables", "dnsmasq", "curl", "gnupg")
DNSMASQ_CONF = "/etc/dnsmasq.conf"
RESOLVED_DIR = "/etc/systemd/resolved.conf.d"
RESOLVED_DROPIN = f"{RESOLVED_DIR}/picluster.conf"
HAS_RESOLVED = "test -x /lib/systemd/systemd-resolved -o -x /usr/lib/systemd/systemd-resolved"

FLUENTBIT_URL = "https://packages.fluentbit.io"
FLUENTBIT_KEY_URL = "https://packages.fluentbit.io/fluentbit.key"
FLUENTBIT_KEY_FINGERPRINT = "C3C0 A285 34B9 293E AF51 FABD 9F9D DC08 3888 C1CD"
FLUENTBIT_DIR = "/etc/fluent-bit"
FLUENTBIT_CONF = f"{FLUENTBIT_DIR}/fluent-bit.conf"
FLUENTBIT_PARSERS = f"{FLUENTBIT_DIR}/parsers-picluster.conf"
FLUENTBIT_LUA = f"{FLUENTBIT_DIR}/adjust_ts.lua"
FLUENTBIT_ENV = f"{FLUENTBIT_DIR}/fluentd.env"
FLUENTBIT_PIN = "/etc/apt/preferences.d/fluent-bit"
FLUENTBIT_DROPIN_DIR = "/etc/systemd/system/fluent-bit.service.d"
FLUENTBIT_DROPIN = f"{FLUENTBIT_DROPIN_DIR}/picluster.conf"
FLUENTBIT_AVAILABLE = ("dpkg-query -W -f '${db:Status-Status}' fluent-bit | grep -qx installed"
                       " || apt-cache show fluent-bit >/dev/null 2>&1")
FLUENTBIT_MISSING = ("fluent-bit is neither installed nor available from apt: its vendor repository is not "
                     "configured (see the step 'apt repository fluent-bit')")
SHARED_KEY_SECRET = "fluentd_shared_key"
VERSIONS = Path(__file__).resolve().parents[2] / "k8s" / "versions.yml"


def nftables_conf(inv: Inventory, host: Host) -> str:
    """Return the gateway's ruleset: the reference's input ports, LAN→WAN forwarding, NAT masquerade."""
    s3 = inv.cluster.services.get("s3")
    return render("nftables.conf.j2", inventory_path=inv.path.name, lan_if=host.settings.lan_interface,
                  lan_net=str(inv.cluster.lan.cidr), wan_if=host.wan.interface if host.wan else "",
                  s3=str(s3) if s3 is not None and s3 in inv.cluster.lan.cidr else "")


def dnsmasq_conf(inv: Inventory, host: Host) -> str:
    """Return dnsmasq.conf: DHCP range, a reservation and a record per host and device, a record per service."""
    c = inv.cluster
    return render(
        "dnsmasq.conf.j2", inventory_path=inv.path.name, lan_if=host.settings.lan_interface,
        lan_net=str(c.lan.cidr), gateway_ip=str(host.ip), domain=c.domain,
        upstream=[str(a) for a in c.dns_upstream], dhcp_first=str(c.lan.dhcp_range[0]),
        dhcp_last=str(c.lan.dhcp_range[1]), lease=c.lan.dhcp_lease,
        dns=str(c.services.get("dns", host.ip)), ntp=str(c.services.get("ntp", host.ip)),
        hosts=[{"name": h.name, "mac": h.mac, "ip": str(h.ip)} for h in inv.hosts.values()],
        devices=[{"name": d.name, "mac": d.mac, "ip": str(d.ip)} for d in inv.devices.values()],
        services=[(name, str(ip)) for name, ip in c.services.items()],
    )


def resolved_dropin(inv: Inventory, host: Host) -> str:
    """Return resolved.conf's drop-in: the gateway resolves through its own dnsmasq."""
    return render("resolved.conf.j2", dns=str(host.ip), domain=inv.cluster.domain)


def fluentbit_version(path: Path = VERSIONS) -> str:
    """Return the fluent-bit version of the release table (k8s/versions.yml, row 'Fluentbit')."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for row in data.get("release", []):
        if str(row.get("software", "")).lower() == "fluentbit":
            return str(row["version"])
    raise ValueError(f"{path}: no Fluentbit row in the release table")


def fluentbit_pin(version: str) -> str:
    """Return the apt preferences that hold fluent-bit at the release table's version."""
    if not re.match(r"^[0-9][0-9A-Za-z.+~-]*$", version):
        raise ValueError(f"not a package version: {version!r}")
    return (f"# Managed by picluster (gateway stage): fluent-bit as pinned in k8s/versions.yml.\n"
            f"Package: fluent-bit\nPin: version {version}*\nPin-Priority: 1001\n")


def fluentbit_conf(inv: Inventory, host: Host) -> str:
    """Return fluent-bit.conf: syslog to the cluster's fluentd, node metrics on :9100."""
    return render("fluent-bit.conf.j2", parsers=FLUENTBIT_PARSERS, lua=FLUENTBIT_LUA,
                  fluentd=f"fluentd.{inv.cluster.domain}", hostname=host.name)


def fluentbit_env(shared_key: str) -> str:
    """fluent-bit's env file (systemd's EnvironmentFile): the shared key exactly as stored."""
    return envfile.env_file([("FLUENTD_SHARED_KEY", shared_key)])


def fluentbit_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    """Return fluent-bit's steps: vendor repository, pinned package, configuration, service."""
    if "fluentd" not in inv.cluster.services:
        return [NotConfigured("fluent-bit", "cluster.services has no 'fluentd': no logs are forwarded")]
    # NOTE: made on first use and shared with the cluster's fluentd (the apps stage reads the same secret)
    key = secrets.ensure_secret(SHARED_KEY_SECRET)
    env_file = File(FLUENTBIT_ENV, fluentbit_env(key), mode=0o600, secret=True)
    changed = [FLUENTBIT_CONF, FLUENTBIT_PARSERS, FLUENTBIT_LUA, FLUENTBIT_ENV, FLUENTBIT_DROPIN]
    return [
        AptRepository("fluent-bit", FLUENTBIT_URL, FLUENTBIT_KEY_URL, FLUENTBIT_KEY_FINGERPRINT),
        File(FLUENTBIT_PIN, fluentbit_pin(fluentbit_version())),
        OnlyIf(Apt("fluent-bit"), FLUENTBIT_AVAILABLE, FLUENTBIT_MISSING),
        OnlyIf(Batch("fluent-bit files", [
            Directory(FLUENTBIT_DIR),
            File(FLUENTBIT_CONF, fluentbit_conf(inv, host)),
            File(FLUENTBIT_PARSERS, render("fluent-bit-parsers.conf.j2")),
            File(FLUENTBIT_LUA, render("fluent-bit-adjust-ts.lua.j2")),
            env_file,
            Directory(FLUENTBIT_DROPIN_DIR),
            File(FLUENTBIT_DROPIN, f"[Service]\nEnvironmentFile={FLUENTBIT_ENV}\n"),
        ]), FLUENTBIT_AVAILABLE, FLUENTBIT_MISSING),
        OnlyIf(Service("fluent-bit", enabled=True, running=True, restart_on=changed),
               FLUENTBIT_AVAILABLE, FLUENTBIT_MISSING),
    ]


IPTABLES_PACKAGES = ("iptables",)


def host_steps(inv: Inventory, host: Host) -> list[AnyStep]:
    """Return the gateway stage's steps, in order."""
    return [
        # dnsmasq's file first: the package then starts with it, not with a listen-everywhere default
        CheckedFile(DNSMASQ_CONF, dnsmasq_conf(inv, host),
                    check="if command -v dnsmasq >/dev/null; then dnsmasq --test -C {path}; fi"),
        Apt(list(PACKAGES)),
        Apt(list(IPTABLES_PACKAGES), present=False),      # as the reference's firewall role: nftables only
        Batch("forwarding and firewall", [
            SysctlsSet([("net.ipv4.ip_forward", 1)]),
            NftRuleset(nftables_conf(inv, host)),
        ]),
        Service("dnsmasq", enabled=True, running=True, restart_on=[DNSMASQ_CONF]),
        OnlyIf(Apt("systemd-resolved"), f"! {{ {HAS_RESOLVED}; }}",
               "systemd-resolved is present (part of systemd, or its own package)", skip=False),
        Batch("systemd-resolved", [
            Directory(RESOLVED_DIR),
            File(RESOLVED_DROPIN, resolved_dropin(inv, host)),
            Service("systemd-resolved", enabled=True, running=True, restart_on=[RESOLVED_DROPIN]),
        ]),
        Batch("chrony serving the LAN", [
            File(os_stage.CHRONY_CONF, os_stage.chrony_conf(inv, host)),
            Service("chrony", enabled=True, running=True, restart_on=[os_stage.CHRONY_CONF]),
        ]),
        *fluentbit_steps(inv, host),
    ]


def plan(inv: Inventory) -> Callable[[Host], Sequence[AnyStep]]:
    """Return the planner `cluster.up` and `gateway.apply` give the runner."""
    return lambda host: host_steps(inv, host)
