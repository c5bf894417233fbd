"""The gateway stage: its plan, rendered files (golden), and its new steps' decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_support import MISSING, b64, decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.remote import APT_UPDATED, Change, Ok, ProbeOutput
from picluster.stages import gateway
from picluster.state.apt_repo import AptRepository
from picluster.state.nftables import APPLIED, NftRuleset
from picluster.state.skip import is_skipped


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    return write_inventory(tmp_path_factory.mktemp("inv"), reference_data())


def test_gateway_plan_in_order(inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICLUSTER_SECRET_FLUENTD_SHARED_KEY", "s3cret")
    names = [s.name for s in gateway.host_steps(inv, inv.hosts["gateway"])]
    assert names == [
        "file /etc/dnsmasq.conf", "apt nftables dnsmasq curl gnupg", "apt iptables", "forwarding and firewall",
        "service dnsmasq",
        "apt systemd-resolved", "systemd-resolved", "chrony serving the LAN", "apt repository fluent-bit",
        "file /etc/apt/preferences.d/fluent-bit", "apt fluent-bit", "fluent-bit files", "service fluent-bit"]


# --- nftables (golden) -----------------------------------------------------------------------------------

NFTABLES = """\
#!/usr/sbin/nft -f
# Managed by picluster (gateway stage) from inventory.yml; changes here are replaced.
# The firewall of the reference gateway: input to the gateway, LAN -> WAN forwarding, NAT.
flush ruleset

define lan_if = "eth0"
define lan_net = 10.0.0.0/24
define wan_if = "wlan0"

table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		# ssh, http, https, iscsi-target, fluent-bit's node metrics (prometheus scrapes the gateway)
		tcp dport { 22, 80, 443, 3260, 9100 } ct state new accept
		# snmp, dns, ntp, dhcp (bootps; broadcasts arrive from the LAN)
		udp dport { 161, 53, 123, 67 } accept
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		# LAN -> WAN: http, https, ssh; dns, ntp
		iifname $lan_if oifname $wan_if ip saddr $lan_net tcp dport { 80, 443, 22 } ct state new accept
		iifname $lan_if oifname $wan_if ip saddr $lan_net udp dport { 53, 123 } ct state new accept
		# WAN -> LAN: ssh, http, https (through the home network's static route to the LAN)
		iifname $wan_if oifname $lan_if ip daddr $lan_net tcp dport { 22, 80, 443 } ct state new accept
		# WAN -> LAN: Minio API and console, kubectl port-forward, on the s3 host
		iifname $wan_if oifname $lan_if ip daddr 10.0.0.11 tcp dport { 9091, 9092, 8080 } ct state new accept
	}

	chain output {
		type filter hook output priority filter; policy accept;
	}
}

table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr $lan_net oifname $wan_if masquerade
	}
}
"""


def test_nftables_ruleset_of_the_reference_inventory(inv: Inventory) -> None:
    assert gateway.nftables_conf(inv, inv.hosts["gateway"]) == NFTABLES


def test_nftables_follows_the_inventorys_interfaces_and_lan(tmp_path: Path) -> None:
    data = reference_data()
    data["groups"]["gateway"]["vars"]["lan_interface"] = "end0"
    data["hosts"]["gateway"]["wan"] = {"interface": "eth1"}
    text = gateway.nftables_conf(write_inventory(tmp_path, data), write_inventory(tmp_path, data).hosts["gateway"])
    assert 'define lan_if = "end0"' in text and 'define wan_if = "eth1"' in text


def test_nftables_without_a_wan_forwards_nothing_and_has_no_nat(tmp_path: Path) -> None:
    data = reference_data()
    del data["hosts"]["gateway"]["wan"]
    inv = write_inventory(tmp_path, data)
    text = gateway.nftables_conf(inv, inv.hosts["gateway"])
    assert "masquerade" not in text and "table ip nat" not in text and "wan_if" not in text
    assert "# no WAN interface in the inventory: nothing is forwarded" in text


# --- dnsmasq ---------------------------------------------------------------------------------------------


def test_dnsmasq_has_a_reservation_and_a_record_per_host_and_a_record_per_service(inv: Inventory) -> None:
    text = gateway.dnsmasq_conf(inv, inv.hosts["gateway"])
    lines = text.splitlines()
    domain = inv.cluster.domain
    for h in inv.hosts.values():
        assert f"dhcp-host={h.mac},{h.name},{h.ip}" in lines
        assert f"host-record={h.name}.{domain},{h.name},{h.ip}" in lines
    for name, ip in inv.cluster.services.items():
        assert f"host-record={name}.{domain},{ip}" in lines
    records = [line for line in lines if line.startswith("host-record=")]
    assert len(records) == len(inv.hosts) + len(inv.devices) + len(inv.cluster.services) == 19
    assert lines[2:15] == [
        "interface=eth0", "listen-address=10.0.0.1", "bind-interfaces", "domain-needed", "bogus-priv",
        "# answer from the records below, never from the gateway's own /etc/hosts (127.0.1.1)", "no-hosts",
        f"local=/{domain}/", f"domain={domain}",
        "# never /etc/resolv.conf: on the gateway it points back at this server",
        "no-resolv", "server=80.58.61.250", "server=80.58.61.254"]
    assert "dhcp-range=10.0.0.32,10.0.0.99,12h" in lines


def test_dnsmasq_reserves_and_records_the_devices_that_are_not_nodes(inv: Inventory) -> None:
    lines = gateway.dnsmasq_conf(inv, inv.hosts["gateway"]).splitlines()
    domain = inv.cluster.domain
    # as the reference: the switch gets its DHCP reservation; pimaster (no MAC given) a DNS record only
    assert "dhcp-host=94:a6:7e:7c:c7:69,switch,10.0.0.2" in lines
    assert f"host-record=switch.{domain},switch,10.0.0.2" in lines
    assert f"host-record=pimaster.{domain},pimaster,10.0.0.10" in lines
    assert not [line for line in lines if line.startswith("dhcp-host=") and "pimaster" in line]
    assert len([line for line in lines if line.startswith("dhcp-host=")]) == len(inv.hosts) + 1


def test_dnsmasq_records_a_service_added_to_the_registry(tmp_path: Path) -> None:
    data = reference_data()
    data["cluster"]["services"]["argocd"] = "10.0.0.100"
    inv = write_inventory(tmp_path, data)
    assert f"host-record=argocd.{inv.cluster.domain},10.0.0.100" in gateway.dnsmasq_conf(inv, inv.hosts["gateway"])


def test_resolved_points_at_dnsmasq(inv: Inventory) -> None:
    text = gateway.resolved_dropin(inv, inv.hosts["gateway"])
    assert text.splitlines()[-3:] == ["[Resolve]", "DNS=10.0.0.1", f"Domains={inv.cluster.domain}"]


# --- fluent-bit ------------------------------------------------------------------------------------------


def test_fluentbit_forwards_to_fluentd_and_exports_metrics_on_9100(inv: Inventory) -> None:
    text = gateway.fluentbit_conf(inv, inv.hosts["gateway"])
    assert f"Host           fluentd.{inv.cluster.domain}" in text and "Port           24224" in text
    assert "Shared_Key     ${FLUENTD_SHARED_KEY}" in text  # the key itself travels as a 0600 file
    assert "Name   prometheus_exporter" in text and "Port   9100" in text
    assert "Name             node_exporter_metrics" in text


def test_fluentbit_is_pinned_to_the_release_table() -> None:
    assert gateway.fluentbit_version() == "1.9.6"
    assert "Pin: version 1.9.6*\n" in gateway.fluentbit_pin("1.9.6")


def test_fluentbit_skips_without_its_repository_and_makes_its_secret_once(
        inv: Inventory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PICLUSTER_SECRET_FLUENTD_SHARED_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    steps = {s.name: s for s in gateway.fluentbit_steps(inv, inv.hosts["gateway"])}
    files = steps["fluent-bit files"]
    outputs = {k: MISSING for k in files.probes()}
    decision = decide(files, outputs)
    assert is_skipped(decision) and "vendor repository is not configured" in decision.reason
    stored = tmp_path / "picluster" / "secrets" / "fluentd_shared_key"
    key = stored.read_text().strip()
    assert len(key) == 64 and stored.stat().st_mode & 0o777 == 0o600
    outputs["only_if"] = out()
    decision = decide(files, outputs)
    assert isinstance(decision, Change) and key not in decision.diff  # a secret never shows in a diff
    again = {s.name: s for s in gateway.fluentbit_steps(inv, inv.hosts["gateway"])}
    assert again and stored.read_text().strip() == key  # made once, then reused


def test_fluentbit_without_fluentd_in_the_registry_is_a_skip(tmp_path: Path) -> None:
    data = reference_data()
    del data["cluster"]["services"]["fluentd"]
    inv = write_inventory(tmp_path, data)
    [step] = gateway.fluentbit_steps(inv, inv.hosts["gateway"])
    assert is_skipped(decide(step, {}))


REPO = AptRepository("fluent-bit", gateway.FLUENTBIT_URL, gateway.FLUENTBIT_KEY_URL,
                     gateway.FLUENTBIT_KEY_FINGERPRINT)
FPR = "C3C0A28534B9293EAF51FABD9F9DDC083888C1CD"
LINE = (b"deb [signed-by=/usr/share/keyrings/fluent-bit-keyring.gpg] "
        b"https://packages.fluentbit.io/ubuntu/focal focal main\n")


def test_vendor_repository_without_a_network_is_an_explicit_skip() -> None:
    decision = decide(REPO, {"os": out("debian bookworm\n"), "sources": MISSING, "key": out(""),
                             "resolves": out("", 2)})
    assert is_skipped(decision)
    assert decision.reason.startswith("skipped: packages.fluentbit.io does not resolve from this host")


def test_vendor_repository_key_is_checked_against_the_pinned_fingerprint() -> None:
    decision = decide(REPO, {"os": out("ubuntu focal\n"), "sources": MISSING, "key": out(""), "resolves": out("x")})
    assert isinstance(decision, Change) and decision.sets == frozenset({APT_UPDATED})
    fetch = decision.commands[0].script
    assert "curl -fsSL --retry 3 -o \"$tmp\" https://packages.fluentbit.io/fluentbit.key" in fetch
    assert f'if [ "$got" != {FPR} ]' in fetch
    assert decision.commands[-1].script.endswith("--force-confold update")
    done = decide(REPO, {"os": out("ubuntu focal\n"), "sources": b64(LINE), "key": out(FPR + "\n"), "resolves": out()})
    assert isinstance(done, Ok)


# --- the firewall step -------------------------------------------------------------------------------------


def rules(current: bytes | None, live: str = "abc", applied: str = "abc",
          enabled: bool = True) -> dict[str, ProbeOutput]:
    stat = out("regular file|755|root|root\n") if current is not None else MISSING
    return {"file.stat": stat, "file.content": b64(current) if current is not None else MISSING,
            "live": out(live + "\n"), "applied": out(applied + "\n") if applied else MISSING,
            "enabled": out("enabled\n") if enabled else out("disabled\n", 1)}


def test_ruleset_is_checked_then_applied_then_recorded() -> None:
    decision = decide(NftRuleset(NFTABLES), rules(None, applied=""))
    assert isinstance(decision, Change)
    write, apply = decision.commands[0].script, decision.commands[1].script
    assert 'nft -c -f "$tmp"' in write and write.index('nft -c -f "$tmp"') < write.index('mv -f -- "$tmp"')
    assert "nft -f /etc/nftables.conf" in apply and f"> {APPLIED}" in apply


def test_ruleset_in_place_and_live_is_ok() -> None:
    assert decide(NftRuleset(NFTABLES), rules(NFTABLES.encode())) == \
        Ok("/etc/nftables.conf is live and loaded at boot")


def test_a_ruleset_changed_by_hand_is_applied_again_and_boot_loading_enabled() -> None:
    decision = decide(NftRuleset(NFTABLES), rules(NFTABLES.encode(), live="changed", enabled=False))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        "the live ruleset is not the one in the file (changed by hand, or not loaded): apply it",
        "enable nftables.service (loads the file at boot)"]
