"""Property: any inventory `inventory.check` accepts plans every stage and renders every file, each value in
its place; any hostile value (a line end, a CR, a space, `;`, `$(`, a leading `-`) is refused.

Inventories keep the reference's shape (its hosts, list lengths and services) and take hostile-but-valid
values generated from each field's grammar, so every rendered file must keep the reference's line count and
each line its directive: a value can change what a line says, never add a line or a directive.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from stage_support import reference_data, write_inventory

from picluster import cloudinit, secrets
from picluster.inventory import Host, Inventory, InventoryError
from picluster.inventory import grammar as g
from picluster.ops.check import ssh_config
from picluster.remote.phases import HostPhase, RunOptions
from picluster.stages import PREFLIGHT, STAGES, gateway
from picluster.stages import os as os_stage
from picluster.stages.apps.render import Renderer
from picluster.stages.apps.spec import load_releases
from picluster.stages.k3s.config import config_yaml

# no shrinking: an inventory is a large example and a failure is read from its values as found. Planning
# every stage takes about half a second an example: PICLUSTER_PROPERTY_EXAMPLES=500 for a longer search.
_MANY = int(os.environ.get("PICLUSTER_PROPERTY_EXAMPLES", "0"))
EXAMPLES = settings(max_examples=_MANY or 15, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HOSTILE_EXAMPLES = settings(EXAMPLES, max_examples=_MANY or 150)
WIFI_PASSWORD = "p$(reboot) `id` 'q' \"dq\" #c ;x"


def _re(pattern: Any, max_size: int = 24) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda v: 0 < len(v) <= max_size)


LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
USERS = _re(g.USER, 12)
HOSTNAMES = st.lists(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True),
                     min_size=1, max_size=3).map(".".join).filter(lambda v: not v.replace(".", "").isdigit())
NTP = st.one_of(HOSTNAMES, st.ip_addresses().map(str))
# printable, with the characters a shell or a config file would take as syntax
HOSTILE_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters='"\\\x7f\x85'),
                       min_size=1, max_size=20)
SSIDS = HOSTILE_TEXT.filter(lambda v: bool(g.SSID.fullmatch(v)) and len(v.encode()) <= 32)
PATHS = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="/"), min_size=1,
                max_size=16).filter(lambda v: v == v.strip() and "${" not in v and v not in (".", ".."))
DISKS = st.sampled_from(["/dev/sda", "/dev/sdz", "/dev/vdb", "/dev/nvme0n1", "/dev/mmcblk0"])


@st.composite
def inventories(draw: st.DrawFn) -> dict[str, Any]:
    """Reference-shaped inventory data with generated valid values in every field that reaches a file."""
    data = copy.deepcopy(reference_data())
    c = data["cluster"]
    c["name"] = draw(LABELS)
    c["domain"] = ".".join(draw(st.lists(LABELS, min_size=1, max_size=3)))
    users = draw(st.lists(USERS, min_size=2, max_size=2, unique=True))
    for user, name in zip(c["admin_users"], users, strict=True):
        user["name"] = name
    c["admin_users"][1]["groups"] = [draw(USERS)]
    c["automation_user"] = users[0]
    c["lan"]["dhcp_lease"] = draw(_re(g.LEASE, 10))
    v = data["vars"]
    v["timezone"] = draw(st.sampled_from(sorted(g.known_zones()) or ["Etc/UTC"]))
    v["locale"] = draw(_re(g.LOCALE, 30))
    v["packages"] = draw(st.lists(_re(g.PACKAGE, 20), min_size=2, max_size=2))
    v["ntp_upstream"] = [draw(NTP)]
    v["ssh_key_file"] = "keys/" + draw(PATHS)
    v["ssh_known_hosts"] = "keys/" + draw(PATHS)
    v["k3s_node_labels"] = {draw(_re(g.LABEL_KEY, 30)): draw(_re(g.LABEL_VALUE, 20))}
    data["groups"]["gateway"]["vars"]["lan_interface"] = draw(_re(g.IFNAME, 15))
    gw = data["hosts"]["gateway"]
    gw["wan"]["interface"] = draw(_re(g.IFNAME, 15))
    gw["wan"]["wifi"] = {"ssid": draw(SSIDS), "password_secret": draw(_re(g.SECRET, 20))}
    macs = draw(st.lists(_re(g.MAC, 17), min_size=len(data["hosts"]) + 1, max_size=len(data["hosts"]) + 1,
                         unique=True))
    for host, mac in zip(data["hosts"].values(), macs, strict=False):
        host["mac"] = mac
        disk = draw(DISKS)
        host["boot_disk"] = disk
        if "data_partition" in host:
            number = draw(st.integers(1, 99))
            host["data_partition"] = {"device": f"{disk}{'p' if disk[-1].isdigit() else ''}{number}",
                                      "start": draw(_re(g.SIZE, 6))}
    data["devices"]["switch"]["mac"] = macs[-1]
    return data


@contextmanager
def _stores() -> Iterator[Path]:
    """A fresh folder for the inventory, with the secrets and state stores inside it (nothing is made)."""
    with tempfile.TemporaryDirectory() as tmp:
        before = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "PICLUSTER_STATE_DIR")}
        os.environ["XDG_CONFIG_HOME"], os.environ["PICLUSTER_STATE_DIR"] = f"{tmp}/config", f"{tmp}/state"
        try:
            yield Path(tmp)
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _shape(text: str) -> list[str]:
    """Each line's directive (its first word, up to `=`): what a value must never change."""
    return [line.split("=", 1)[0].split(" ", 1)[0].strip() for line in text.split("\n")]


def rendered(inv: Inventory) -> dict[str, str]:
    """Every line-based file the stages make from the inventory, by name."""
    gw = inv.gateway
    assert gw is not None
    files = {"dnsmasq": gateway.dnsmasq_conf(inv, gw), "nftables": gateway.nftables_conf(inv, gw),
             "resolved": gateway.resolved_dropin(inv, gw), "fluent-bit": gateway.fluentbit_conf(inv, gw),
             "chrony-gateway": os_stage.chrony_conf(inv, gw), "sshd": os_stage.sshd_dropin(inv),
             "ssh_config": ssh_config(list(inv.hosts.values()), Path("/tmp/ctl"))}
    for h in inv.hosts.values():
        files[f"chrony-{h.name}"] = os_stage.chrony_conf(inv, h)
        files[f"logind-{h.name}"] = os_stage.logind_dropin(h)
        if h.is_k3s:
            files[f"k3s-{h.name}"] = config_yaml(inv, h)
    return files


def plan_every_stage(inv: Inventory) -> int:
    """Build every host step of every stage (a dry run: no secret or CA is made) and render every Helm
    release's values and manifests; return how many steps and releases."""
    count = 0
    with secrets.dry_run():
        for stage in (PREFLIGHT, *STAGES):
            for phase in stage.phases(inv, RunOptions(dry_run=True)):
                if isinstance(phase, HostPhase):
                    for host in inv.select(roles=stage.roles):
                        count += len(phase.plan(host))
    releases = load_releases()
    renderer = Renderer(inv, releases, secret=lambda name: f"<secret {name}>", pki=None)
    for release in releases.ordered():
        renderer.render(release)
        count += 1
    return count


def _check_cloud_init(inv: Inventory, host: Host) -> None:
    files = cloudinit.boot_partition(inv, host, wifi_password=WIFI_PASSWORD)
    ud = yaml.safe_load(files["user-data"])
    assert ud["hostname"] == host.name and ud["timezone"] == host.settings.timezone
    assert ud["locale"] == host.settings.locale
    assert [u["name"] for u in ud["users"]] == [u.name for u in inv.cluster.admin_users]
    assert all(isinstance(cmd, list) for cmd in ud.get("bootcmd", []) + ud.get("runcmd", []))
    if host.data_partition is not None:
        assert ud["bootcmd"][0][4] == host.boot_disk and ud["runcmd"] == [["partprobe", host.boot_disk]]
    net = yaml.safe_load(files["network-config"])
    if host.wan is not None and host.wan.wifi is not None:
        side = net["wifis"][host.wan.interface]
        assert side["access-points"] == {host.wan.wifi.ssid: {"password": WIFI_PASSWORD}}
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == host.name
    if host.is_k3s:
        config = yaml.safe_load(config_yaml(inv, host))
        assert config["node-name"] == host.name and config["node-ip"] == str(host.ip)
        assert {f"{k}={v}" for k, v in host.settings.k3s_node_labels.items()} <= set(config["node-label"])


@pytest.fixture(scope="module")
def reference() -> Iterator[tuple[dict[str, str], Inventory]]:
    data = reference_data()
    data["vars"].update(ssh_key_file="keys/id", ssh_known_hosts="keys/known_hosts")
    data["vars"]["k3s_node_labels"] = {"disktype": "ssd"}
    with _stores() as tmp:
        inv = write_inventory(tmp, data)
        yield rendered(inv), inv


@EXAMPLES
@given(data=inventories())
def test_an_accepted_inventory_plans_every_stage_and_keeps_every_line_in_place(
        data: dict[str, Any], reference: tuple[dict[str, str], Inventory]) -> None:
    baseline, _ = reference
    with _stores() as tmp:
        inv = write_inventory(tmp, data)
        assert plan_every_stage(inv) > 0
        for host in inv.hosts.values():
            _check_cloud_init(inv, host)
        files = rendered(inv)
    for name, text in files.items():
        assert _shape(text) == _shape(baseline[name]), (name, text)
    dnsmasq = files["dnsmasq"].split("\n")
    for h in inv.hosts.values():
        assert f"dhcp-host={h.mac},{h.name},{h.ip}" in dnsmasq
    assert f"interface={inv.hosts['gateway'].settings.lan_interface}" in dnsmasq


# --- hostile values: each refused ------------------------------------------------------------------------

# key path in the data -> a function putting a value there
FIELDS = {
    "cluster.name": lambda d, v: d["cluster"].__setitem__("name", v),
    "cluster.domain": lambda d, v: d["cluster"].__setitem__("domain", v),
    "cluster.automation_user": lambda d, v: d["cluster"].__setitem__("automation_user", v),
    "cluster.lan.dhcp_lease": lambda d, v: d["cluster"]["lan"].__setitem__("dhcp_lease", v),
    "vars.timezone": lambda d, v: d["vars"].__setitem__("timezone", v),
    "vars.locale": lambda d, v: d["vars"].__setitem__("locale", v),
    "vars.packages": lambda d, v: d["vars"].__setitem__("packages", [v]),
    "vars.ntp_upstream": lambda d, v: d["vars"].__setitem__("ntp_upstream", [v]),
    "groups.gateway.vars.lan_interface": lambda d, v: d["groups"]["gateway"]["vars"].__setitem__("lan_interface", v),
    "hosts.node1.boot_disk": lambda d, v: d["hosts"]["node1"].__setitem__("boot_disk", v),
    "hosts.node1.data_partition.device": lambda d, v: d["hosts"]["node1"]["data_partition"].__setitem__("device", v),
    "hosts.node1.mac": lambda d, v: d["hosts"]["node1"].__setitem__("mac", v),
    "hosts.gateway.wan.interface": lambda d, v: d["hosts"]["gateway"]["wan"].__setitem__("interface", v),
    "devices.switch.mac": lambda d, v: d["devices"]["switch"].__setitem__("mac", v),
}
VALID = {"cluster.name": "picluster", "cluster.domain": "picluster.example.com", "cluster.automation_user": "picluster",
         "cluster.lan.dhcp_lease": "12h", "vars.timezone": "Europe/Madrid", "vars.locale": "es_ES.UTF-8",
         "vars.packages": "bridge-utils", "vars.ntp_upstream": "ntp.ubuntu.com",
         "groups.gateway.vars.lan_interface": "eth0", "hosts.node1.boot_disk": "/dev/sda",
         "hosts.node1.data_partition.device": "/dev/sda3", "hosts.node1.mac": "dc:a6:32:00:00:11",
         "hosts.gateway.wan.interface": "wlan0", "devices.switch.mac": "94:a6:7e:7c:c7:69"}
INJECTIONS = st.sampled_from(["\n", "\r", " ", ";", "$(", "\nx", "\r\n", "\t", "`", "'", '"', "\x00", "#"])


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, str]:
    """A field and a valid value of it with an injection placed inside, at its end, or a `-` in front."""
    field = draw(st.sampled_from(sorted(FIELDS)))
    good = VALID[field]
    how = draw(st.sampled_from(["append", "insert", "dash"]))
    if how == "dash":
        return field, "-" + good
    injection = draw(INJECTIONS)
    at = len(good) if how == "append" else draw(st.integers(0, len(good)))
    return field, good[:at] + injection + good[at:]


@HOSTILE_EXAMPLES
@given(case=hostile())
def test_a_hostile_value_is_always_refused(case: tuple[str, str]) -> None:
    field, value = case
    data = copy.deepcopy(reference_data())
    FIELDS[field](data, value)
    with _stores() as tmp:
        with pytest.raises(InventoryError) as err:
            write_inventory(tmp, data)
    assert field in str(err.value) and "\n" not in str(err.value)
