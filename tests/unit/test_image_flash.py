"""Flashing for real into files: a raspi-shaped image built here, served over HTTP on 127.0.0.1,
written, verified, seeded without mounting, and read back; every bad input refused with the target
untouched."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from image_support.builder import BOOT_START, MIB, ROOT_START, BuiltImage, build_raspi_image
from image_support.fake_devices import RECORDED_SYSTEM_DISK, FakeDeviceInspector, lsblk_json, partition
from image_support.http_server import Served, serve
from image_support.inventories import write_inventory

from picluster.inventory import Inventory, load_inventory
from picluster.stages.image import ImageError, bootfix
from picluster.stages.image.bootfs import FatPartition
from picluster.stages.image.flash import Options, Report, flash, seed_disk
from picluster.stages.image.progress import Silent
from picluster.stages.image.rootfs import ExtPartition
from picluster.stages.image.seed import render, seed_dir

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(f"/usr/{d}/{t}") for d, t in
            (("bin", "mcopy"), ("sbin", "mkfs.vfat"), ("sbin", "debugfs"), ("sbin", "mkfs.ext4"))),
    reason="needs mtools, dosfstools and e2fsprogs (apt-get install mtools dosfstools e2fsprogs)")

URL_PATH = "/releases/ubuntu-test-preinstalled-server-arm64+raspi.img.xz"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_raspi_image(tmp_path_factory.mktemp("image"))


@pytest.fixture
def served(built: BuiltImage) -> Served:
    return Served(files={URL_PATH: built.xz.read_bytes()})


@pytest.fixture
def base_url(served: Served) -> Iterator[str]:
    with serve(served) as url:
        yield url


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    monkeypatch.setenv("PICLUSTER_SECRET_WIFI_PASSWORD", "correct horse battery")
    return load_inventory(write_inventory(tmp_path / "hosts"))


def options(tmp_path: Path, built: BuiltImage, base_url: str, **kw: object) -> Options:
    args: dict = {"cache": tmp_path / "cache", "image": base_url + URL_PATH,
                  "sha256": hashlib.sha256(built.xz.read_bytes()).hexdigest(),
                  "known_hosts": tmp_path / "known_hosts", "yes": False}
    args.update(kw)
    return Options(**args)


def run(inv: Inventory, host: str, opts: Options, *, device: str | None = None, output: str | None = None,
        inspector: FakeDeviceInspector | None = None, answer: bool = True,
        asked: list[str] | None = None) -> Report:
    def confirm(question: str) -> bool:
        if asked is not None:
            asked.append(question)
        return answer

    return flash(inv, inv.hosts[host], device=device, output=output, opts=opts,
                 inspector=inspector or FakeDeviceInspector({}), progress=Silent(), confirm=confirm)


def fat(path: Path) -> FatPartition:
    return FatPartition(str(path), BOOT_START)


def ext(path: Path) -> ExtPartition:
    return ExtPartition(str(path), ROOT_START)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the whole flash, read back --------------------------------------------------------------------


def test_flash_to_file_over_http_then_read_everything_back(tmp_path: Path, built: BuiltImage, inv: Inventory,
                                                           base_url: str) -> None:
    out = tmp_path / "node1.img"
    report = run(inv, "node1", options(tmp_path, built, base_url), output=str(out))
    assert report.verified and report.written.size == built.size
    assert report.written.sha256 == digest(built.raw)
    assert out.stat().st_size == built.size

    boot = fat(out)
    user_data = boot.read("user-data")
    assert user_data is not None and user_data.startswith(b"#cloud-config\n")
    ud = yaml.safe_load(user_data)
    assert ud["hostname"] == "node1" and ud["timezone"] == "Europe/Madrid" and ud["locale"] == "es_ES.UTF-8"
    assert [u["name"] for u in ud["users"]] == ["picluster", "oss"]          # no default ubuntu user
    assert all(u["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and u["ssh_authorized_keys"] for u in ud["users"])
    assert ud["bootcmd"] == [["cloud-init-per", "once", "addpartition", "sgdisk", "/dev/sda", "-g", "-e",
                              "-n=0:30G:0", "-t", "0:8e00"]]                # argv: no shell
    public = ud["ssh_keys"]["ed25519_public"]
    assert ud["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    nc = yaml.safe_load(boot.read("network-config") or b"")
    assert nc["version"] == 2 and nc["ethernets"]["eth0"]["dhcp4"] is True
    assert yaml.safe_load(boot.read("meta-data") or b"")["local-hostname"] == "node1"

    cmdline = (boot.read("cmdline.txt") or b"").decode()
    assert cmdline.count("\n") == 1 and cmdline.startswith(built.boot_files["cmdline.txt"].decode().strip())
    for flag in bootfix.CGROUP_FLAGS:
        assert cmdline.split().count(flag) == 1

    # The Ubuntu 20.04 USB-boot fix (the host's catalog entry is ubuntu-20.04).
    assert boot.read("vmlinux") == built.vmlinux == gzip.decompress(built.boot_files["vmlinuz"])
    config = (boot.read("config.txt") or b"").decode().splitlines()
    assert "kernel=vmlinux" in config and "initramfs initrd.img followkernel" in config
    assert "arm_64bit=1" in config and config.count("kernel=vmlinux") == 3
    assert (boot.read("auto_decompress_kernel") or b"").startswith(b"#!/bin/bash")
    md5 = hashlib.md5(built.boot_files["vmlinuz"], usedforsecurity=False).hexdigest()
    assert boot.read("check.md5") == f"{md5}  /boot/firmware/vmlinuz\n".encode()
    root = ext(out)
    assert root.read(bootfix.APT_HOOK) == b'DPkg::Post-Invoke {"/bin/bash /boot/firmware/auto_decompress_kernel"; };\n'
    mode = subprocess.run(["debugfs", "-R", f"stat {bootfix.APT_HOOK}", f"{out}?offset={ROOT_START}"],
                          capture_output=True, text=True).stdout
    assert "Mode:  0644" in mode and "User:     0" in mode

    # Everything we did not mean to change is unchanged: files on both partitions, and every byte
    # outside them (MBR, the gap, the tail).
    for name in ("vmlinuz", "initrd.img", "start4.elf", "README"):
        assert boot.read(name) == built.boot_files[name], name
    for name, data in built.root_files.items():
        assert root.read(name) == data, name
    raw, new = built.raw.read_bytes(), out.read_bytes()
    assert new[:BOOT_START] == raw[:BOOT_START]
    assert new[ROOT_START + (built.size - ROOT_START):] == raw[built.size:]

    # The host key is pinned for first contact, and the seed kept in the cache with secrets 0600.
    known = (tmp_path / "known_hosts").read_text().splitlines()
    assert known == [f"10.0.0.11 {' '.join(public.split()[:2])}"]
    folder = seed_dir(tmp_path / "cache", inv, inv.hosts["node1"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "user-data").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert (folder / "user-data").read_bytes() == user_data


def test_a_second_run_changes_nothing_and_flags_stay_once(tmp_path: Path, built: BuiltImage, inv: Inventory,
                                                          base_url: str, served: Served) -> None:
    out = tmp_path / "node2.img"
    opts = options(tmp_path, built, base_url)
    first = run(inv, "node2", opts, output=str(out))
    assert "cmdline.txt" in first.applied.changed
    before = out.read_bytes()
    seed = render(inv, inv.hosts["node2"], seed_dir(opts.cache, inv, inv.hosts["node2"]))
    again = seed_disk(str(out), seed, usb_boot_fix=True)
    assert again.changed == []
    assert out.read_bytes() == before
    # A whole second flash: the image comes from the cache (no new request), the same host key.
    requests = len(served.requests)
    second = run(inv, "node2", opts, output=str(out))
    assert len(served.requests) == requests
    cmdline = (fat(out).read("cmdline.txt") or b"").decode().split()
    assert [cmdline.count(f) for f in bootfix.CGROUP_FLAGS] == [1, 1, 1]
    assert second.applied.changed and (tmp_path / "known_hosts").read_text().count("\n") == 1


def test_gateway_gets_static_lan_and_wifi_with_its_secret_kept_private(tmp_path: Path, built: BuiltImage,
                                                                       inv: Inventory, base_url: str) -> None:
    out = tmp_path / "gw.img"
    run(inv, "gateway", options(tmp_path, built, base_url), output=str(out))
    nc = yaml.safe_load(fat(out).read("network-config") or b"")
    eth0 = nc["ethernets"]["eth0"]
    assert eth0["dhcp4"] is False and eth0["addresses"] == ["10.0.0.1/24"]
    assert nc["wifis"]["wlan0"]["access-points"] == {"homelab": {"password": "correct horse battery"}}
    folder = seed_dir(tmp_path / "cache", inv, inv.hosts["gateway"])
    assert stat.S_IMODE((folder / "network-config").stat().st_mode) == 0o600
    assert "bootcmd" not in yaml.safe_load(fat(out).read("user-data") or b"")


def test_flash_to_a_device_asks_showing_model_size_and_serial(tmp_path: Path, built: BuiltImage,
                                                             inv: Inventory, base_url: str) -> None:
    disk = tmp_path / "sdb"
    disk.write_bytes(b"\xaa" * (96 * MIB))
    fake = FakeDeviceInspector({str(disk): lsblk_json(str(disk), size=96 * MIB, rm=True)})
    asked: list[str] = []
    run(inv, "node3", options(tmp_path, built, base_url), device=str(disk), inspector=fake, asked=asked)
    assert len(asked) == 1
    assert "Extreme SSD" in asked[0] and "0.1 GiB" in asked[0] and "S4EVNF0M123" in asked[0]
    data = disk.read_bytes()
    assert len(data) == 96 * MIB and data[built.size:] == b"\xaa" * (96 * MIB - built.size)
    assert yaml.safe_load(fat(disk).read("user-data") or b"")["hostname"] == "node3"


# --- downloads: resume, checksum, truncation ----------------------------------------------------------


def test_truncated_download_is_not_used_and_the_next_run_resumes(tmp_path: Path, built: BuiltImage,
                                                                 inv: Inventory, base_url: str,
                                                                 served: Served) -> None:
    out = tmp_path / "node1.img"
    out.write_bytes(b"previous image")
    half = len(served.files[URL_PATH]) // 2
    served.truncate_at = half
    with pytest.raises(ImageError, match="run again to resume"):
        run(inv, "node1", options(tmp_path, built, base_url), output=str(out))
    assert out.read_bytes() == b"previous image"
    images = tmp_path / "cache" / "images"
    assert [p.name for p in images.iterdir()] == [Path(URL_PATH).name + ".part"]
    kept = (images / (Path(URL_PATH).name + ".part")).stat().st_size
    assert 0 < kept <= half
    assert not (tmp_path / "known_hosts").exists()

    served.truncate_at = None
    run(inv, "node1", options(tmp_path, built, base_url), output=str(out))
    assert served.requests[-1] == (URL_PATH, f"bytes={kept}-")
    assert out.stat().st_size == built.size
    assert [p.name for p in images.iterdir()] == [Path(URL_PATH).name]


def test_checksum_mismatch_removes_the_download_and_leaves_the_target(tmp_path: Path, built: BuiltImage,
                                                                      inv: Inventory, base_url: str) -> None:
    out = tmp_path / "node1.img"
    out.write_bytes(b"previous image")
    with pytest.raises(ImageError, match=r"sha256 .* expected 0{64}; removed it") as err:
        run(inv, "node1", options(tmp_path, built, base_url, sha256="0" * 64), output=str(out))
    assert err.value.code == 2 and "\n" not in str(err.value)
    assert out.read_bytes() == b"previous image"
    assert list((tmp_path / "cache" / "images").iterdir()) == []


def test_catalog_entry_without_sha256_needs_one(tmp_path: Path, built: BuiltImage, inv: Inventory) -> None:
    catalog = tmp_path / "images.yml"
    catalog.write_text("default: x\nimages:\n  x: {url: 'https://example.invalid/x.img.xz', sha256: null}\n")
    out = tmp_path / "node1.img"
    with pytest.raises(ImageError, match=r"no sha256 .* pass --sha256"):
        run(inv, "node1", Options(cache=tmp_path / "cache", catalog=catalog), output=str(out))
    assert not out.exists()


# --- refusals: the target is untouched ---------------------------------------------------------------


def _device(tmp_path: Path, size: int = 72 * MIB) -> Path:
    disk = tmp_path / "sdx"
    disk.write_bytes(b"\x5a" * size)
    return disk


@pytest.mark.parametrize("case", ["too-small", "mounted", "system", "not-removable", "partition",
                                  "not-confirmed", "not-a-device", "mounted-per-mount-table"])
def test_refused_targets_are_untouched(tmp_path: Path, built: BuiltImage, inv: Inventory, base_url: str,
                                       case: str) -> None:
    disk = _device(tmp_path, 16 * MIB if case == "too-small" else 72 * MIB)
    before = digest(disk)
    path = str(disk)
    size = disk.stat().st_size
    records = {
        "too-small": lsblk_json(path, size=size),
        "mounted": lsblk_json(path, size=size, children=(partition(path + "1", MIB, "/media/oss/system-boot"),)),
        "system": RECORDED_SYSTEM_DISK,
        "not-removable": lsblk_json(path, size=size, rm=False, hotplug=False, tran="sata"),
        "partition": lsblk_json(path, size=size, dtype="part"),
        "not-confirmed": lsblk_json(path, size=size),
        "mounted-per-mount-table": lsblk_json(path, size=size),
    }
    expected = {
        "too-small": "is smaller", "mounted": "is mounted at /media/oss/system-boot; unmount it first",
        "system": "holds this machine's / (/dev/vda)", "not-removable": "pass --force",
        "partition": "not a whole disk", "not-confirmed": "not confirmed; nothing was written",
        "not-a-device": "is not a block device; to write an image file use --output",
        "mounted-per-mount-table": "is mounted at /mnt/x",
    }[case]
    mounts = f"{path} /mnt/x ext4 rw 0 0\n" if case == "mounted-per-mount-table" else ""
    fake = FakeDeviceInspector({k: v for k, v in [(path, records.get(case, ""))] if case != "not-a-device"},
                               mounts)
    with pytest.raises(ImageError, match=re.escape(expected)) as err:
        run(inv, "node1", options(tmp_path, built, base_url), device=path, inspector=fake,
            answer=case != "not-confirmed")
    assert "\n" not in str(err.value)
    assert digest(disk) == before
    assert not (tmp_path / "known_hosts").exists()


def test_force_allows_a_fixed_disk_but_never_a_system_one(tmp_path: Path, built: BuiltImage, inv: Inventory,
                                                          base_url: str) -> None:
    disk = _device(tmp_path)
    fixed = FakeDeviceInspector({str(disk): lsblk_json(str(disk), size=72 * MIB, rm=False, hotplug=False,
                                                       tran="sata")})
    run(inv, "node1", options(tmp_path, built, base_url, force=True, yes=True), device=str(disk), inspector=fixed)
    assert fat(disk).read("meta-data") is not None
    before = digest(disk)
    system = FakeDeviceInspector({str(disk): RECORDED_SYSTEM_DISK})
    with pytest.raises(ImageError, match="never overwritten"):
        run(inv, "node1", options(tmp_path, built, base_url, force=True, yes=True), device=str(disk),
            inspector=system)
    assert digest(disk) == before


def test_image_without_system_boot_is_refused_before_writing(tmp_path: Path, inv: Inventory) -> None:
    odd = build_raspi_image(tmp_path / "odd", boot_label="BOOT", name="odd")
    out = tmp_path / "node1.img"
    out.write_bytes(b"previous image")
    opts = Options(cache=tmp_path / "cache", image=str(odd.xz), known_hosts=tmp_path / "known_hosts")
    with pytest.raises(ImageError, match="has no system-boot partition"):
        run(inv, "node1", opts, output=str(out))
    assert out.read_bytes() == b"previous image"


def test_local_raw_image_with_no_verify(tmp_path: Path, built: BuiltImage, inv: Inventory) -> None:
    out = tmp_path / "node4.img"
    opts = Options(cache=tmp_path / "cache", image=str(built.raw), sha256=digest(built.raw), verify=False,
                   known_hosts=tmp_path / "known_hosts")
    report = run(inv, "node4", opts, output=str(out))
    assert not report.verified and report.written.sha256 == digest(built.raw)
    assert yaml.safe_load(fat(out).read("meta-data") or b"")["instance-id"] == "picluster-node4"


@pytest.mark.parametrize(("kw", "message"), [
    ({}, "give exactly one target"),
    ({"output": "x.img", "sha256": "xyz"}, "--sha256: 'xyz' is not a sha256"),
])
def test_usage_errors_come_before_anything_else(tmp_path: Path, inv: Inventory, kw: dict, message: str) -> None:
    sha = kw.pop("sha256", None)
    opts = Options(cache=tmp_path / "cache", image="https://example.invalid/x.img.xz", sha256=sha)
    with pytest.raises(ImageError, match=re.escape(message)) as err:
        run(inv, "node1", opts, **kw)
    assert err.value.code == 2 and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("to", ["output", "device"])
def test_an_interrupted_flash_says_so_plainly(tmp_path: Path, built: BuiltImage, inv: Inventory, base_url: str,
                                              monkeypatch: pytest.MonkeyPatch, to: str) -> None:
    import picluster.stages.image.flash as flash_module

    def interrupted(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(flash_module, "write_image", interrupted)
    target = _device(tmp_path) if to == "device" else tmp_path / "node1.img"
    if to == "output":
        target.write_bytes(b"previous image")
    fake = FakeDeviceInspector({str(target): lsblk_json(str(target), size=72 * MIB)})
    with pytest.raises(ImageError) as err:
        run(inv, "node1", options(tmp_path, built, base_url, yes=True), inspector=fake, **{to: str(target)})
    if to == "output":
        assert str(err.value) == f"interrupted; {target} was not changed"
        assert target.read_bytes() == b"previous image"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []
    else:
        assert "is partly written and will not boot; run image.flash again" in str(err.value)
    assert not (tmp_path / "known_hosts").exists()


# --- the disk the user confirmed is the disk written ------------------------------------------------------


class SwappedAfterConfirm(FakeDeviceInspector):
    """Answers one lsblk text until the user confirms, then another: the disk at the path was swapped."""

    def __init__(self, path: str, before: str, after: str) -> None:
        super().__init__({path: before})
        self.path, self.after = path, after

    def swap(self) -> None:
        self._lsblk[self.path] = self.after


def _with_devno(text: str, devno: str) -> str:
    data = json.loads(text)
    data["blockdevices"][0]["maj:min"] = devno
    return json.dumps(data)


@pytest.mark.parametrize("change", [
    {"serial": "OTHER-SERIAL"},
    {"size": 128 * MIB},
    {"devno": "8:32"},
    {"mountpoints": ("/media/someone/stick",)},
])
def test_a_disk_changed_between_confirmation_and_writing_is_refused(
        tmp_path: Path, built: BuiltImage, inv: Inventory, base_url: str, change: dict[str, object]) -> None:
    disk = tmp_path / "sdb"
    disk.write_bytes(b"\xaa" * (96 * MIB))
    confirmed = _with_devno(lsblk_json(str(disk), size=96 * MIB, rm=True), "8:16")
    kw: dict = {"size": 96 * MIB, "rm": True, **{k: v for k, v in change.items() if k != "devno"}}
    now = _with_devno(lsblk_json(str(disk), **kw), str(change.get("devno", "8:16")))
    fake = SwappedAfterConfirm(str(disk), confirmed, now)

    def confirm(question: str) -> bool:
        fake.swap()   # e.g. the user pulled the stick and put in another while the question waited
        return True

    with pytest.raises(ImageError, match=r"refusing to write .*sdb") as err:
        flash(inv, inv.hosts["node3"], device=str(disk), output=None,
              opts=options(tmp_path, built, base_url), inspector=fake, progress=Silent(), confirm=confirm)
    assert "\n" not in str(err.value)
    assert disk.read_bytes() == b"\xaa" * (96 * MIB)
    assert fake.asked == [str(disk), str(disk)]


def test_the_device_opened_must_have_the_confirmed_number(tmp_path: Path) -> None:
    """The last check is on the open file itself: a path now naming another device is refused before a byte."""
    from picluster.stages.image.source import ImageSource
    from picluster.stages.image.writer import write_image

    image = tmp_path / "tiny.img"
    image.write_bytes(b"\x01" * 4096)
    backing = tmp_path / "disk"
    backing.write_bytes(b"\xaa" * (4 * MIB))
    attached = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    try:
        rdev = os.stat(loop).st_rdev
        with pytest.raises(ImageError, match="not the device 8:16 you confirmed"):
            write_image(ImageSource.open(image), loop, Silent(), create=False, devno="8:16")
        assert backing.read_bytes()[:4096] == b"\xaa" * 4096
        written = write_image(ImageSource.open(image), loop, Silent(), create=False,
                              devno=f"{os.major(rdev)}:{os.minor(rdev)}")
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
    assert written.size == 4096 and backing.read_bytes()[:4096] == b"\x01" * 4096
