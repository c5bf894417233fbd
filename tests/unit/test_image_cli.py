"""`invoke image.flash` and `invoke image.seed` as a user runs them: exit codes, one-line errors,
targets untouched on refusal."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from image_support.builder import build_raspi_image
from image_support.inventories import write_inventory

from picluster.cloudinit import CMDLINE_TXT, CONFIG_TXT

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))


def invoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PICLUSTER_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home"),
           "PICLUSTER_SECRET_WIFI_PASSWORD": "pw"}
    return subprocess.run([INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def one_line_error(out: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


@pytest.mark.skipif(not Path("/usr/bin/mcopy").exists(), reason="needs mtools")
def test_flash_an_image_file_from_the_command_line(tmp_path: Path) -> None:
    built = build_raspi_image(tmp_path / "img")
    inv = write_inventory(tmp_path / "hosts")
    out_file = tmp_path / "node1.img"
    sha = hashlib.sha256(built.xz.read_bytes()).hexdigest()
    out = invoke(tmp_path, "image.flash", "--host", "node1", "--output", str(out_file), "--image", str(built.xz),
                 "--sha256", sha, "--inventory", str(inv), "--known-hosts", str(tmp_path / "kh"))
    assert out.returncode == 0, out.stderr
    assert f"{out_file}: ubuntu-test" in out.stdout and "verified" in out.stdout
    assert "changed: user-data, network-config, meta-data, cmdline.txt, vmlinux" in out.stdout
    assert (tmp_path / "kh").read_text().startswith("10.0.0.11 ssh-ed25519 ")
    # Refused: a regular file is no block device (the system inspector looks), and it stays as it was.
    before = out_file.read_bytes()
    out = invoke(tmp_path, "image.flash", "--host", "node1", "--device", str(out_file), "--image", str(built.xz),
                 "--sha256", sha, "--inventory", str(inv), "--yes")
    assert "is not a block device; to write an image file use --output" in one_line_error(out)
    assert out_file.read_bytes() == before


@pytest.mark.parametrize("mutation", ["bad-hostname", "bad-key", "unknown-host", "two-targets"])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(tmp_path: Path, mutation: str) -> None:
    def mutate(data: dict) -> None:
        if mutation == "bad-hostname":
            data["hosts"]["Node_1"] = data["hosts"].pop("node1")
        if mutation == "bad-key":
            data["cluster"]["admin_users"][0]["ssh_keys"] = ["ssh-ed25519 AAAAnot-a-key oss@laptop"]

    inv = write_inventory(tmp_path / "hosts", mutate=mutate)
    target = tmp_path / "target.img"
    target.write_bytes(b"keep me")
    args = ["image.flash", "--host", "node1", "--inventory", str(inv), "--image", str(target)]
    if mutation != "no-target":
        args += ["--output", str(target)]
    if mutation == "two-targets":
        args += ["--device", "/dev/null"]
    if mutation == "unknown-host":
        args[2] = "node9"
    if mutation == "bad-sha256":
        args += ["--sha256", "xyz"]
    line = one_line_error(invoke(tmp_path, *args))
    assert {"bad-hostname": "is not a valid DNS label", "bad-key": "is not an OpenSSH public key line",
            "unknown-host": "no host 'node9'", "no-target": "give exactly one target",
            "two-targets": "give exactly one target", "bad-sha256": "is not a sha256"}[mutation] in line
    assert target.read_bytes() == b"keep me"
    assert not (tmp_path / "home" / ".ssh").exists()


def test_seed_a_mounted_disk_twice(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "hosts")
    boot, root = tmp_path / "boot", tmp_path / "root"
    (root / "etc/apt/apt.conf.d").mkdir(parents=True)
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE_TXT)
    (boot / "config.txt").write_text(CONFIG_TXT)
    (boot / "vmlinuz").write_bytes(gzip.compress(b"kernel" * 1000))
    args = ("image.seed", "--host", "node2", "--boot-dir", str(boot), "--root-dir", str(root),
            "--inventory", str(inv), "--known-hosts", str(tmp_path / "kh"))
    first = invoke(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert (boot / "vmlinux").read_bytes() == b"kernel" * 1000
    assert yaml.safe_load((boot / "user-data").read_text())["hostname"] == "node2"
    assert oct((boot / "user-data").stat().st_mode & 0o777) == "0o600"
    assert (root / "etc/apt/apt.conf.d/999_decompress_rpi_kernel").is_file()
    second = invoke(tmp_path, *args)
    assert second.returncode == 0 and "changed: nothing" in second.stdout, second.stdout
    assert (boot / "cmdline.txt").read_text().count("cgroup_enable=memory") == 1
    # Without --root-dir the apt hook is missing, and the user is told.
    third = invoke(tmp_path, *args[:5], *args[7:])
    assert "the apt hook /etc/apt/apt.conf.d/999_decompress_rpi_kernel was not written" in third.stdout


def test_seed_without_system_boot_files_is_a_clear_error(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "hosts")
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(invoke(tmp_path, "image.seed", "--host", "node2", "--boot-dir", str(empty),
                                 "--inventory", str(inv), "--known-hosts", str(tmp_path / "kh")))
    assert "has no cmdline.txt" in line
    assert list(empty.iterdir()) == []
