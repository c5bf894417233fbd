"""The os stage: plans per role, rendered files (golden), and its new steps' decisions (facts in → decision out)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from stage_support import KEY, MISSING, NO_MARKS, b64, decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.remote import NEEDS_REBOOT, Change, Ok, ProbeOutput, StepError, changed_mark
from picluster.stages import STAGES
from picluster.stages import os as os_stage
from picluster.state import File, Service, Sysctl
from picluster.state.batch import Batch
from picluster.state.checked_file import checked_write
from picluster.state.cloud_init import RESULT, CloudInitDone
from picluster.state.hostname import Hostname
from picluster.state.hosts_entry import HostsEntry
from picluster.state.reboot import Reboot
from picluster.state.shared_kernel import MODULES_FILE, ModulesLoaded, SysctlsSet
from picluster.state.skip import OnlyIf, is_skipped
from picluster.state.snaps import SnapsRemoved
from picluster.state.sshd import DROPIN, SshdHardening
from picluster.state.storage import DataVolume
from picluster.state.swap import SwapOff
from picluster.state.timezone import Timezone


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    return write_inventory(tmp_path_factory.mktemp("inv"), reference_data())


# --- plans -------------------------------------------------------------------------------------------


def test_the_catalogue_runs_the_os_and_gateway_plans(inv: Inventory) -> None:
    from picluster.remote.phases import HostPhase, RunOptions

    for name in ("os", "gateway"):
        (phase,) = next(s for s in STAGES if s.name == name).phases(inv, RunOptions())
        assert isinstance(phase, HostPhase) and phase.plan(inv.hosts["gateway"])


def test_every_role_gets_the_os_steps_in_order(inv: Inventory) -> None:
    names = [s.name for s in os_stage.host_steps(inv, inv.hosts["gateway"])]
    assert names[0] == "cloud-init finished"
    order = ["kernel cmdline and gpu_mem, reboot if they changed", "kernel modules, sysctls, swap"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert names[-1].startswith("sshd hardening")
    assert not any(n.startswith("data volume") for n in names)  # the gateway declares no data partition
    node = [s.name for s in os_stage.host_steps(inv, inv.hosts["node2"])]
    assert "data volume /dev/sda3 at /storage" in node


@pytest.mark.parametrize("host", ["gateway", "node1", "node4"])
def test_a_no_op_os_stage_stays_within_15_round_trips(inv: Inventory, host: str) -> None:
    steps = os_stage.host_steps(inv, inv.hosts[host])
    assert sum(1 for s in steps if s.probes()) <= 12


def test_packages_are_the_stages_own_plus_the_inventorys(tmp_path: Path) -> None:
    data = reference_data()
    data["hosts"]["node1"]["vars"] = {"packages": ["libraspberrypi-bin", "chrony"]}
    inv = write_inventory(tmp_path, data)
    assert os_stage.packages(inv.hosts["node1"]) == [*os_stage.BASE_PACKAGES, "libraspberrypi-bin"]
    # the other hosts take the top-level vars: the reference inventory's Pi tools
    assert os_stage.packages(inv.hosts["node2"]) == [*os_stage.BASE_PACKAGES, "libraspberrypi-bin", "bridge-utils"]


# --- rendered files (golden) -----------------------------------------------------------------------------

CHRONY_GATEWAY = """\
# Managed by picluster (os stage) from inventory.yml; changes here are replaced.
# The gateway: NTP server for the LAN, from the upstream pool.
pool ntp.ubuntu.com iburst
allow 10.0.0.0/24
# keep serving the LAN (as stratum 10) when the upstream cannot be reached
local stratum 10
driftfile /var/lib/chrony/chrony.drift
makestep 1.0 3
rtcsync
logdir /var/log/chrony
"""

CHRONY_NODE = """\
# Managed by picluster (os stage) from inventory.yml; changes here are replaced.
# A node: client of the gateway only.
server 10.0.0.1 iburst
driftfile /var/lib/chrony/chrony.drift
makestep 1.0 3
rtcsync
logdir /var/log/chrony
"""


def test_chrony_gateway_serves_the_lan_and_nodes_follow_the_gateway(inv: Inventory) -> None:
    assert os_stage.chrony_conf(inv, inv.hosts["gateway"]) == CHRONY_GATEWAY
    assert os_stage.chrony_conf(inv, inv.hosts["node3"]) == CHRONY_NODE


def test_chrony_in_a_container_does_not_set_the_hosts_clock() -> None:
    assert 'DAEMON_OPTS="-F 1 -x"' in os_stage.chrony_default("systemd-nspawn")
    assert 'DAEMON_OPTS="-F 1"\n' in os_stage.chrony_default("")
    assert "ConditionCapability=\n" in os_stage.chrony_dropin("systemd-nspawn")
    assert "[Unit]" not in os_stage.chrony_dropin("")


def test_logind_dropin_covers_the_grace_period_and_sorts_after_unattended_upgrades(inv: Inventory) -> None:
    text = os_stage.logind_dropin(inv.hosts["node1"])
    delay = int(text.split("InhibitDelayMaxSec=")[1].split()[0])
    assert delay >= inv.hosts["node1"].settings.shutdown.grace == 30
    assert text.splitlines()[-2:] == ["[Login]", "InhibitDelayMaxSec=30"]
    name = Path(os_stage.LOGIND_DROPIN).name
    names = [name, os_stage.UNATTENDED_UPGRADES_DROPIN, "99-kubelet.conf", "50-picluster.conf"]
    assert sorted(names)[-1] == name


def test_logind_delay_follows_a_longer_grace_period(tmp_path: Path) -> None:
    data = reference_data()
    data["vars"]["kubelet_shutdown_grace_period"] = "2m"
    inv = write_inventory(tmp_path, data)
    assert "InhibitDelayMaxSec=120\n" in os_stage.logind_dropin(inv.hosts["node2"])


SSHD = """\
# Managed by picluster (os stage): SSH hardening of the reference. Key login stays on: picluster
# (the user picluster connects as) logs in with its key only.
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin no
UseDNS no
GSSAPIAuthentication no
X11Forwarding no
"""


def test_sshd_hardening_keeps_key_login(inv: Inventory) -> None:
    assert os_stage.sshd_dropin(inv) == SSHD
    assert "AllowUsers" not in SSHD and "AuthenticationMethods" not in SSHD


def test_sshd_hardening_keeps_key_only_root_login_when_picluster_connects_as_root(tmp_path: Path) -> None:
    data = reference_data()
    data["cluster"]["admin_users"].append({"name": "root", "ssh_keys": [KEY]})
    data["cluster"]["automation_user"] = "root"
    assert "PermitRootLogin prohibit-password\n" in os_stage.sshd_dropin(write_inventory(tmp_path, data))


def test_sshd_drop_in_sorts_before_cloud_inits_own() -> None:
    assert sorted([Path(DROPIN).name, "50-cloud-init.conf"])[0] == Path(DROPIN).name


def test_multipath_blacklists_the_disks() -> None:
    from picluster.stages.templates import render

    assert 'devnode "^sd[a-z0-9]+"' in render("multipath.conf.j2")


# --- batch and skips ------------------------------------------------------------------------------------


def test_batch_reads_every_step_in_one_round_trip_and_passes_marks_in_order() -> None:
    conf = "/etc/x.conf"
    batch = Batch("x", [File(conf, "new\n"), Service("x", restart_on=[conf])])
    probes = batch.probes()
    assert set(probes) == {"0.stat", "0.content", "1.enabled", "1.active"}
    outputs = {"0.stat": out("regular file|644|root|root\n"), "0.content": b64(b"old\n"),
               "1.enabled": out("enabled\n"), "1.active": out("active\n")}
    decision = batch.decide(batch.parse(outputs, NO_MARKS))
    assert isinstance(decision, Change)
    assert decision.diff.startswith(f"[file {conf}]") and "[service x]\nrestart x" in decision.diff
    assert decision.commands[-1].script == "systemctl restart -- x"
    assert changed_mark(conf) in decision.sets


def test_batch_of_ok_steps_is_ok_with_every_reason_and_skips_first() -> None:
    batch = Batch("k", [Sysctl("a.b", 1), OnlyIf(Sysctl("c.d", 2, file="/etc/sysctl.d/c.conf"), "false", "no c.d")])
    outputs = {"0.runtime": out("1\n"), "0.file": b64(b"a.b = 1\n"), "1.inner.runtime": out("2"),
               "1.inner.file": MISSING, "1.only_if": out("", 1)}
    decision = batch.decide(batch.parse(outputs, NO_MARKS))
    assert is_skipped(decision)
    assert decision.reason == "skipped: sysctl c.d: no c.d (and 1 ok)"


def test_batch_names_the_step_that_cannot_decide() -> None:
    batch = Batch("t", [Timezone("Mars/Olympus")])
    outputs = {"0.link": out("/usr/share/zoneinfo/Etc/UTC"), "0.named": out("Etc/UTC"), "0.known": out("", 1)}
    with pytest.raises(StepError, match=r"^timezone Mars/Olympus: .*unknown time zone"):
        batch.decide(batch.parse(outputs, NO_MARKS))


def test_only_if_can_report_a_plain_ok() -> None:
    step = OnlyIf(Sysctl("a.b", 1), "false", "nothing to do here", skip=False)
    decision = decide(step, {"inner.runtime": out("0"), "inner.file": MISSING, "only_if": out("", 1)})
    assert decision == Ok("nothing to do here")


# --- kernel on a shared kernel ----------------------------------------------------------------------------


def modules(loaded: tuple[bool, ...], persisted: bytes | None, virt: str) -> dict[str, ProbeOutput]:
    outputs = {f"loaded.{i}": out("", 0 if ok else 1) for i, ok in enumerate(loaded)}
    return {**outputs, "file": b64(persisted) if persisted is not None else MISSING,
            "virt": out(virt + "\n") if virt != "none" else out("none\n", 1)}


def test_modules_share_one_file_and_none_overwrites_another() -> None:
    step = ModulesLoaded(["br_netfilter", "overlay", "iscsi_tcp"])
    decision = decide(step, modules((False, True, False), b"iscsi_tcp\n", "none"))
    assert isinstance(decision, Change)
    assert [c.script for c in decision.commands[:2]] == ["modprobe -- br_netfilter", "modprobe -- iscsi_tcp"]
    assert "+br_netfilter" in decision.diff and "+overlay" in decision.diff and "+iscsi_tcp" not in decision.diff


def test_modules_in_a_container_are_persisted_and_their_load_skipped() -> None:
    step = ModulesLoaded(["overlay", "iscsi_tcp"])
    decision = decide(step, modules((True, False), None, "systemd-nspawn"))
    assert isinstance(decision, Change)
    assert all("modprobe" not in c.script for c in decision.commands)
    assert "(skipped: load iscsi_tcp: this host is a container (systemd-nspawn)" in decision.diff
    again = decide(step, modules((True, False), b"overlay\niscsi_tcp\n", "systemd-nspawn"))
    assert is_skipped(again) and again.reason.endswith(f"listed in {MODULES_FILE}")


def sysctls(values: dict[int, tuple[str | None, bool]], persisted: bytes | None, virt: str) -> dict[str, ProbeOutput]:
    outputs: dict[str, ProbeOutput] = {}
    for i, (now, writable) in values.items():
        outputs[f"runtime.{i}"] = out(now + "\n") if now is not None else out("", 255)
        outputs[f"writable.{i}"] = out("", 0 if writable else 1)
    return {**outputs, "file": b64(persisted) if persisted is not None else MISSING,
            "virt": out(virt + "\n") if virt != "none" else out("none\n", 1)}


def test_sysctls_are_set_and_persisted_in_one_file() -> None:
    step = SysctlsSet([("net.ipv4.ip_forward", 1), ("fs.inotify.max_user_watches", 256000)])
    decision = decide(step, sysctls({0: ("0", True), 1: ("8192", True)}, b"net.ipv4.ip_forward=0\n", "none"))
    assert isinstance(decision, Change)
    assert [c.script for c in decision.commands[:2]] == [
        "sysctl -q -w -- net.ipv4.ip_forward=1", "sysctl -q -w -- fs.inotify.max_user_watches=256000"]
    assert "+net.ipv4.ip_forward = 1" in decision.diff and "+fs.inotify.max_user_watches = 256000" in decision.diff


def test_sysctls_read_only_in_a_container_are_persisted_only() -> None:
    step = SysctlsSet([("fs.inotify.max_user_watches", 256000), ("net.ipv4.ip_forward", 1)])
    assert step.probes()["writable.0"] == "test -w /proc/sys/fs/inotify/max_user_watches"
    facts = sysctls({0: ("8192", False), 1: ("1", False)}, None, "systemd-nspawn")
    decision = decide(step, facts)
    assert isinstance(decision, Change)
    assert all(not c.script.startswith("sysctl") for c in decision.commands)
    assert "is 8192, read-only in this container" in decision.diff
    done = b"fs.inotify.max_user_watches = 256000\nnet.ipv4.ip_forward = 1\n"
    assert is_skipped(decide(step, sysctls({0: ("8192", False), 1: ("1", False)}, done, "systemd-nspawn")))
    assert decide(step, sysctls({0: ("256000", False), 1: ("1", False)}, done, "systemd-nspawn")) == Ok(
        "sysctls fs.inotify.max_user_watches, net.ipv4.ip_forward as wanted (runtime and "
        "/etc/sysctl.d/90-picluster.conf)")


def test_a_batch_refuses_two_steps_on_one_file() -> None:
    with pytest.raises(ValueError, match="several steps read /etc/x"):
        Batch("x", [File("/etc/x", "a\n"), File("/etc/x", "b\n")])


# --- identity, swap, snaps -----------------------------------------------------------------------------


def test_cloud_init_done_is_read_from_its_result_file() -> None:
    step = CloudInitDone()
    assert f"[ -e {RESULT} ] || timeout 600 cloud-init status --wait" in step.probes()["result"]
    done = '{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}'
    assert decide(step, {"result": out(done)}) == Ok("cloud-init done")
    assert decide(step, {"result": out("not-installed\n")}) == Ok("cloud-init is not installed")
    with pytest.raises(StepError, match="finished with errors: bad seed"):
        decide(step, {"result": out('{"v1": {"errors": ["bad seed"]}}')})
    with pytest.raises(StepError, match="still running after 600s"):
        decide(step, {"result": out("", 124)})


def test_hosts_entry_is_first_for_its_address_and_leaves_cloud_inits_own() -> None:
    step = HostsEntry("127.0.1.1", ["node1.lab.test", "node1"])
    cloud_init = b"127.0.0.1 localhost\n127.0.1.1\tnode1\tnode1\n"
    decision = decide(step, {"content": b64(cloud_init)})
    assert isinstance(decision, Change)
    assert "-127.0.1.1\tnode1\tnode1\n+127.0.1.1\tnode1.lab.test\tnode1" in decision.diff
    rewritten = b"127.0.0.1\tlocalhost\n127.0.1.1\tnode1.lab.test\tnode1\n127.0.1.1\tnode1\tnode1\n"
    assert decide(step, {"content": b64(rewritten)}) == Ok("/etc/hosts: 127.0.1.1 is first node1.lab.test node1")


def test_hostname_sets_the_file_and_the_running_name() -> None:
    decision = decide(Hostname("node1"), {"running": out("localhost\n"), "file": b64(b"localhost\n")})
    assert isinstance(decision, Change)
    assert decision.diff == "/etc/hostname: localhost -> node1\nrunning hostname: localhost -> node1"
    assert decision.commands[1].script == "hostname node1"
    assert decide(Hostname("node1"), {"running": out("node1\n"), "file": b64(b"node1\n")}) == \
        Ok("host is called node1 (running and /etc/hostname)")


def test_timezone_relinks_localtime() -> None:
    step = Timezone("Europe/Madrid")
    ok = {"link": out("/usr/share/zoneinfo/Europe/Madrid\n"), "named": out("Europe/Madrid\n"), "known": out()}
    assert decide(step, ok) == Ok("time zone is Europe/Madrid")
    decision = decide(step, {**ok, "link": out("/usr/share/zoneinfo/Etc/UTC\n"), "named": out("Etc/UTC\n")})
    assert isinstance(decision, Change) and "ln -sfn /usr/share/zoneinfo/Europe/Madrid /etc/localtime" in \
        decision.commands[0].script


def test_swap_is_turned_off_and_commented_out_of_fstab() -> None:
    fstab = b"/dev/sda2 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n"
    decision = decide(SwapOff(), {"active": out("/swap.img file 1024 0 -2\n"), "fstab": b64(fstab),
                                  "virt": out("none\n", 1)})
    assert isinstance(decision, Change)
    assert decision.commands[0].script == "swapoff -a"
    assert decision.diff == "swapoff /swap.img\n/etc/fstab: comment out its swap lines"


def test_swap_of_a_containers_host_is_a_skip() -> None:
    decision = decide(SwapOff(), {"active": out("/dev/zram0 partition 1 0 -2\n"), "fstab": MISSING,
                                  "virt": out("systemd-nspawn\n")})
    assert is_skipped(decision) and "is the host's" in decision.reason


def test_snaps_are_removed_then_snapd() -> None:
    snaps = "Name Version Rev Tracking Publisher Notes\ncore20 1 2 latest canonical base\nlxd 4 5 x canonical -\n"
    decision = decide(SnapsRemoved(), {"snapd": out("installed"), "snaps": out(snaps)})
    assert isinstance(decision, Change)
    assert decision.diff == "- snap core20\n- snap lxd\n- package snapd"
    assert "purge --autoremove snapd" in decision.commands[0].script
    assert decide(SnapsRemoved(), {"snapd": out("", 1), "snaps": out("", 127)}) == Ok("snapd is not installed")


# --- reboot -------------------------------------------------------------------------------------------------


def test_reboot_only_when_a_step_asked_for_it_and_the_runner_is_told_the_boot_it_left() -> None:
    from picluster.remote.reboot import rebooting_from

    assert decide(Reboot(), {"boot_id": out("aaaa\n")}) == Ok("no step of this run needs a reboot")
    decision = decide(Reboot(), {"boot_id": out("aaaa\n")}, frozenset({NEEDS_REBOOT}))
    assert isinstance(decision, Change) and decision.clears == frozenset({NEEDS_REBOOT})
    assert rebooting_from(decision.sets) == "aaaa"
    script = decision.commands[0].script
    assert "systemd-run" in script and "--on-active=2" in script
    assert "--timer-property=AccuracySec=100ms" in script   # a transient timer fires up to a minute late without


# --- data volume --------------------------------------------------------------------------------------------

VOLUME = DataVolume("/dev/sda3", vg="vg_local", lv="lv_storage", mountpoint="/storage")


def volume_facts(**over: ProbeOutput) -> dict[str, ProbeOutput]:
    base = {"virt": out("none\n", 1), "block": out(), "device_type": out("", 2), "pv": out("", 5),
            "lv": out("", 5), "lv_type": out("", 2), "fstab": b64(b"/dev/sda2 / ext4 defaults 0 1\n"),
            "mounted": out("", 1)}
    return {**base, **over}


def test_volume_is_built_bottom_up() -> None:
    decision = decide(VOLUME, volume_facts())
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == [
        "pvcreate /dev/sda3", "vgcreate vg_local /dev/sda3", "lvcreate /dev/vg_local/lv_storage over 100% of vg_local",
        "mkfs.ext4 /dev/vg_local/lv_storage", "/etc/fstab: /dev/vg_local/lv_storage /storage ext4 defaults 0 2",
        "mount /storage"]


def test_volume_in_place_is_ok() -> None:
    facts = volume_facts(device_type=out("LVM2_member\n"), pv=out("  vg_local\n"), lv=out("  lv_storage\n"),
                         lv_type=out("ext4\n"), fstab=b64(b"/dev/vg_local/lv_storage /storage ext4 defaults 0 2\n"),
                         mounted=out("/dev/mapper/vg_local-lv_storage\n"))
    assert decide(VOLUME, facts) == Ok("/dev/vg_local/lv_storage (ext4) is mounted at /storage and in /etc/fstab")


def test_volume_never_formats_a_device_holding_a_filesystem() -> None:
    with pytest.raises(StepError, match="it holds a ext4 filesystem; if its data can go, wipe it"):
        decide(VOLUME, volume_facts(device_type=out("ext4\n")))


def test_volume_without_a_disk_is_a_skip_in_a_container_and_an_error_elsewhere() -> None:
    assert is_skipped(decide(VOLUME, volume_facts(block=out("", 1), virt=out("systemd-nspawn\n"))))
    with pytest.raises(StepError, match="is not a block device: was the disk partitioned"):
        decide(VOLUME, volume_facts(block=out("", 1)))


# --- sshd hardening -------------------------------------------------------------------------------------------


def sshd_outputs(authorized: str, config: str = "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n",
                 current: bytes | None = None) -> dict[str, ProbeOutput]:
    stat = out("regular file|644|root|root\n") if current is not None else MISSING
    return {"file.stat": stat, "file.content": b64(current) if current is not None else MISSING,
            "authorized": out(authorized), "config": out(config)}


def test_sshd_hardening_is_written_checked_and_reloaded() -> None:
    step = SshdHardening(SSHD, user="picluster", keys=[KEY])
    decision = decide(step, sshd_outputs(KEY + "\n"))
    assert isinstance(decision, Change)
    assert 'sshd -t -f "$tmp"' in decision.commands[0].script
    assert decision.commands[-1].script == "sshd -t && systemctl try-reload-or-restart ssh.service"
    assert isinstance(decide(step, sshd_outputs(KEY + "\n", current=SSHD.encode())), Ok)


def test_sshd_hardening_refuses_to_lock_the_automation_user_out() -> None:
    step = SshdHardening(SSHD, user="picluster", keys=[KEY])
    with pytest.raises(StepError, match="refusing to turn password login off: none of picluster's inventory keys"):
        decide(step, sshd_outputs("ssh-ed25519 AAAAsomeoneelse other\n"))
    with pytest.raises(StepError, match=r"has no 'Include /etc/ssh/sshd_config\.d/\*\.conf' line"):
        decide(step, sshd_outputs(KEY + "\n", config="Port 22\n"))


# --- a checked file, for real (local sh) ------------------------------------------------------------------------


def run_script(script: str, stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script], input=stdin, capture_output=True, timeout=30)


def test_checked_write_installs_only_what_passes_its_check(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    bad = checked_write(str(target), b"broken\n", "grep -q good {path}", mode=None, owner=None, group=None)
    result = run_script(bad.script, bad.stdin)
    assert result.returncode == 1 and b"does not pass its check; the old one stays" in result.stderr
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    good = checked_write(str(target), b"good\n", "grep -q good {path}", mode=None, owner=None, group=None)
    assert run_script(good.script, good.stdin).returncode == 0
    assert target.read_text() == "good\n"


def test_an_interrupted_dpkg_run_is_finished_before_apt_runs() -> None:
    from picluster.state.dpkg import DpkgConsistent

    assert decide(DpkgConsistent(), {"pending": out("0\n"), "audit": out("")}) == \
        Ok("dpkg is consistent (no interrupted run)")
    decision = decide(DpkgConsistent(), {"pending": out("2\n"), "audit": out("The following packages are only "
                                                                                "half configured\n", 1)})
    assert isinstance(decision, Change) and "dpkg --force-confdef --force-confold --configure -a" in \
        decision.commands[0].script
    assert decision.diff.startswith("finish an interrupted dpkg run (2 pending dpkg journal entries; dpkg --audit:")
