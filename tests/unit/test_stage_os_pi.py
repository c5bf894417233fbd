"""The reference's Pi specifics: gpu_mem (with its reboot), the iSCSI initiator, the helper scripts run by a
real sh against a stand-in vcgencmd, and the bootloader's USB boot order (facts in, decision out)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from stage_support import decide, out, reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.remote import NEEDS_REBOOT, Change, Ok, changed_mark
from picluster.stages import os as os_stage
from picluster.state import Line
from picluster.state.bootloader import NO_VCGENCMD, UsbBootOrder, boot_order, tries_usb
from picluster.state.skip import is_skipped


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return write_inventory(tmp_path, reference_data())


def test_gpu_mem_is_set_once_and_asks_for_the_reboot() -> None:
    from picluster.cloudinit import config_txt

    step = Line(os_stage.CONFIG_TXT, os_stage.GPU_MEM, regex=r"^gpu_mem=", reboot=True)
    image = config_txt()
    decision = decide(step, {"content": _content(image)})
    assert isinstance(decision, Change)
    assert decision.sets == {NEEDS_REBOOT, changed_mark(os_stage.CONFIG_TXT)}
    assert "+gpu_mem=16" in decision.diff
    other = decide(step, {"content": _content(image + "gpu_mem=64\n")})
    assert isinstance(other, Change) and "-gpu_mem=64" in other.diff and "+gpu_mem=16" in other.diff
    assert decide(step, {"content": _content(image + "gpu_mem=16\n")}) == \
        Ok(f"{os_stage.CONFIG_TXT} has the line 'gpu_mem=16'")


def _content(text: str) -> object:
    from stage_support import b64

    return b64(text.encode())


def test_the_os_stage_reboots_once_for_cmdline_and_gpu_mem_together(inv: Inventory) -> None:
    steps = os_stage.host_steps(inv, inv.hosts["node1"])
    (boot,) = [s for s in steps if s.name == "kernel cmdline and gpu_mem, reboot if they changed"]
    names = [s.name for s in boot.steps]  # type: ignore[attr-defined]
    assert names[1:] == [f"line in {os_stage.CONFIG_TXT}", "reboot if needed"]   # one Reboot after both


def test_iscsi_initiator_name_follows_the_references_pattern_with_the_clusters_domain(inv: Inventory) -> None:
    assert inv.cluster.domain == "picluster.example.com"
    assert os_stage.iscsi_initiator_name(inv, inv.hosts["node3"]) == "iqn.2021-07.com.example.picluster:node3"
    text = os_stage.initiator_file(inv, inv.hosts["node3"])
    assert text.splitlines()[-1] == "InitiatorName=iqn.2021-07.com.example.picluster:node3"
    names = [s.name for b in os_stage.host_steps(inv, inv.hosts["node3"]) for s in getattr(b, "steps", [b])]
    assert f"file {os_stage.ISCSI_INITIATOR}" in names and "service iscsid" in names


def stand_in_vcgencmd(tmp_path: Path, throttled: str) -> dict[str, str]:
    """A vcgencmd test double on PATH that answers like the firmware."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    double = bin_dir / "vcgencmd"
    double.write_text(f"#!/bin/sh\ncase \"$1\" in\n  get_throttled) echo throttled={throttled} ;;\n"
                      "  measure_temp) echo temp=48.2\"'\"C ;;\nesac\n")
    double.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_helper(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(os_stage.PI_SCRIPTS / name)], capture_output=True, text=True, env=env,
                          timeout=10)


def test_pi_throttling_decodes_the_firmware_bits(tmp_path: Path) -> None:
    ok = run_helper("pi_throttling", stand_in_vcgencmd(tmp_path, "0x0"))
    assert ok.returncode == 0 and "OK: no throttling" in ok.stdout
    bad = run_helper("pi_throttling", stand_in_vcgencmd(tmp_path, "0x50005"))
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[1:] == ["under-voltage detected (now)", "currently throttled",
                                           "under-voltage has occurred since boot",
                                           "throttling has occurred since boot"]


def test_pi_temp_prints_cpu_and_gpu(tmp_path: Path) -> None:
    shown = run_helper("pi_temp", stand_in_vcgencmd(tmp_path, "0x0"))
    assert shown.returncode == 0
    cpu, gpu = shown.stdout.splitlines()
    assert cpu.startswith("CPU => ") and gpu == "GPU => 48.2'C"


@pytest.mark.parametrize(("config", "order", "usb"), [
    ("[all]\nBOOT_UART=0\nBOOT_ORDER=0xf14\n", "0xf14", True),
    ("BOOT_ORDER=0xf41\n", "0xf41", True),
    ("BOOT_ORDER=0xF21\n", "0xf21", False),
    ("BOOT_UART=0\n", "", False),
])
def test_boot_order(config: str, order: str, usb: bool) -> None:
    assert boot_order(config) == order and tries_usb(order) is usb


def test_the_bootloader_check_says_what_to_do() -> None:
    step = UsbBootOrder()
    assert decide(step, {"config": out("BOOT_ORDER=0xf14\n")}) == Ok("BOOT_ORDER=0xf14 tries USB mass storage boot")
    old = decide(step, {"config": out("BOOT_ORDER=0x1\n")})
    assert is_skipped(old) and "BOOT_ORDER=0x1 does not try USB boot" in old.reason
    assert "rpi-eeprom-update -a" in old.reason and "BOOT_ORDER=0xf14" in old.reason
    lab = decide(step, {"config": out("", NO_VCGENCMD)})
    assert is_skipped(lab) and lab.reason.startswith("skipped: no vcgencmd on this host")
