"""`invoke inventory.check` on hostile values: exit 2, one line naming the file, the key and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))

CASES: dict[str, tuple[Any, str]] = {
    "two disks": (lambda d: d["hosts"]["node1"].update(boot_disk="/dev/sda /dev/sdb"), "hosts.node1.boot_disk"),
    "a second dnsmasq line": (lambda d: d["hosts"]["node2"].update(mac="dc:a6:32:00:00:12\n"), "hosts.node2.mac"),
    "a package that is an option": (lambda d: d["vars"].update(packages=["--allow-unauthenticated"]),
                                    "vars.packages"),
    "a zone that is not one": (lambda d: d["vars"].update(timezone="Mars/Olympus"), "vars.timezone"),
    "a lease with a directive": (lambda d: d["cluster"]["lan"].update(dhcp_lease="12h\ndhcp-option=3,6.6.6.6"),
                                 "cluster.lan.dhcp_lease"),
    "a device in the pool": (lambda d: d["devices"]["switch"].update(ip="10.0.0.150"), "devices.switch.ip"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_value_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    mutate, where = CASES[case]
    data = yaml.safe_load((REPO / "hosts/inventory.yml").read_text())
    mutate(data)
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([INVOKE, "inventory.check", "--inventory", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {where}: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_check_names_the_devices() -> None:
    out = subprocess.run([INVOKE, "inventory.check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "devices: switch (10.0.0.2), pimaster (10.0.0.10)" in out.stdout


def test_check_refuses_an_image_the_catalog_does_not_have(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "hosts/inventory.yml").read_text())
    data["hosts"]["node3"]["vars"] = {"image": "ubuntu-99.04"}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "images.yml").write_text((REPO / "hosts" / "images.yml").read_text())   # the catalog beside it
    out = subprocess.run([INVOKE, "inventory.check", "--inventory", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "hosts.node3: vars.image:" in lines[0] and "no image 'ubuntu-99.04'" in lines[0]
