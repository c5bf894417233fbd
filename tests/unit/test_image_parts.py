"""The image stage's pure parts: cmdline and config.txt edits, xz sizes, lsblk facts and the safety
decision, known_hosts pinning, secrets, and the catalog."""

from __future__ import annotations

import base64
import hmac
import lzma
import os
import re
import stat
from pathlib import Path

import pytest
from image_support.fake_devices import (
    RECORDED_OLD_USB_STICK,
    RECORDED_SYSTEM_DISK,
    lsblk_json,
    partition,
)

from picluster.cloudinit import CMDLINE_TXT, CONFIG_TXT
from picluster.sshkeys import ensure_keypair, generate_ed25519, pin_known_host
from picluster.stages.image import ImageError, bootfix
from picluster.stages.image.catalog import load_catalog, override
from picluster.stages.image.devices import parse_lsblk, parse_mounts, refusals
from picluster.stages.image.partitions import parse_mbr
from picluster.stages.image.secrets import read_secret
from picluster.stages.image.source import ImageSource, xz_uncompressed_size

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


# --- cmdline.txt and config.txt ----------------------------------------------------------------------


def test_cgroup_flags_are_added_once_and_a_second_pass_changes_nothing() -> None:
    once = bootfix.cmdline_with_cgroups(CMDLINE_TXT)
    assert once == CMDLINE_TXT.strip() + " cgroup_enable=cpuset cgroup_memory=1 cgroup_enable=memory\n"
    assert bootfix.cmdline_with_cgroups(once) == once


@pytest.mark.parametrize("line", [
    "console=tty1 cgroup_memory=1 root=LABEL=writable",                         # some present
    "console=tty1 cgroup_enable=cpuset cgroup_enable=cpuset root=LABEL=writable",  # duplicated
    "console=tty1\nroot=LABEL=writable\n",                                       # split over lines
])
def test_cgroup_flags_end_up_exactly_once_on_one_line(line: str) -> None:
    out = bootfix.cmdline_with_cgroups(line)
    assert out.count("\n") == 1 and out.endswith("\n")
    assert [out.split().count(f) for f in bootfix.CGROUP_FLAGS] == [1, 1, 1]
    assert "root=LABEL=writable" in out.split()


def test_empty_cmdline_is_an_error() -> None:
    with pytest.raises(ImageError, match=r"cmdline\.txt is empty"):
        bootfix.cmdline_with_cgroups(" \n")


def test_config_boots_vmlinux_on_every_model_and_is_stable() -> None:
    fixed = bootfix.config_for_vmlinux(CONFIG_TXT)
    lines = fixed.splitlines()
    for section in ("[pi4]", "[pi2]", "[pi3]"):
        block = lines[lines.index(section) + 1:]
        block = block[:block.index("")]
        assert {"kernel=vmlinux", "initramfs initrd.img followkernel", "boot_delay"} <= set(block)
    assert "dtoverlay=vc4-fkms-v3d" in lines and "max_framebuffers=2" in lines
    assert lines[lines.index("[all]") + 1] == "arm_64bit=1"
    assert {"device_tree_address=0x03000000", "enable_uart=1", "cmdline=cmdline.txt",
            "include syscfg.txt", "include usercfg.txt"} <= set(lines)
    assert not any(line.startswith("kernel=uboot") for line in lines)
    assert bootfix.config_for_vmlinux(fixed) == fixed
    later = fixed + "gpu_mem=16\n"               # what the os stage adds later survives a re-seed
    assert bootfix.config_for_vmlinux(later) == later


def test_config_keeps_arm_64bit_only_if_it_was_there() -> None:
    assert "arm_64bit=1" not in bootfix.config_for_vmlinux(CONFIG_TXT.replace("arm_64bit=1\n", ""))


def test_decompress_kernel_refuses_a_non_gzip_kernel() -> None:
    with pytest.raises(ImageError, match="not a gzip kernel"):
        bootfix.decompress_kernel(b"\x00" * 100)


# --- image sources ------------------------------------------------------------------------------------


def test_xz_size_comes_from_the_index_for_one_and_several_streams(tmp_path: Path) -> None:
    a, b = os.urandom(300_000) + bytes(700_000), os.urandom(5000)
    one = tmp_path / "one.xz"
    one.write_bytes(lzma.compress(a))
    assert xz_uncompressed_size(one) == len(a)
    two = tmp_path / "two.xz"
    two.write_bytes(lzma.compress(a) + b"\x00" * 8 + lzma.compress(b))   # stream padding between
    assert xz_uncompressed_size(two) == len(a) + len(b)
    source = ImageSource.open(two)
    assert b"".join(source.chunks(program=True)) == a + b == b"".join(source.chunks(program=False))


def test_truncated_xz_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    cut = tmp_path / "cut.img.xz"
    cut.write_bytes(lzma.compress(os.urandom(200_000))[:50_000])
    with pytest.raises(ImageError, match="not a complete xz file"):
        ImageSource.open(cut)


def test_gpt_and_blank_disks_are_not_raspi_images() -> None:
    with pytest.raises(ImageError, match="no MBR"):
        parse_mbr(bytes(512))
    gpt = bytearray(512)
    gpt[446 + 4] = 0xEE
    gpt[446 + 12] = 1
    gpt[510:512] = b"\x55\xaa"
    with pytest.raises(ImageError, match="GPT"):
        parse_mbr(bytes(gpt))


# --- device facts and the safety decision -----------------------------------------------------------


def test_recorded_system_disk_is_never_a_target() -> None:
    facts = parse_lsblk(RECORDED_SYSTEM_DISK, "/dev/vda")
    assert facts.size == 274877906944 and not facts.removable
    reasons = refusals(facts, GIB, force=True)
    assert reasons == ["/dev/vda holds this machine's / (/dev/vda); it is never overwritten"]


def test_old_lsblk_format_with_a_mounted_partition() -> None:
    facts = parse_lsblk(RECORDED_OLD_USB_STICK, "/dev/sdb")
    assert (facts.model, facts.serial, facts.removable, facts.usb) == ("Extreme", "AA010203040506070809",
                                                                       True, True)
    assert facts.describe() == "/dev/sdb: Extreme, 57.3 GiB, serial AA010203040506070809, usb, removable"
    assert refusals(facts, GIB) == ["/dev/sdb is mounted at /media/oss/system-boot; unmount it first "
                                    "(umount /media/oss/system-boot)"]


def test_a_clean_usb_disk_may_be_written() -> None:
    facts = parse_lsblk(lsblk_json("/dev/sdc", size=64 * GIB, children=(partition("/dev/sdc1", GIB),)),
                        "/dev/sdc")
    assert refusals(facts, 4 * GIB) == []


def test_the_mount_table_catches_what_lsblk_missed() -> None:
    mounts = "/dev/sdc1 /mnt/with\\040space vfat rw 0 0\n/dev/sda2 / ext4 rw 0 0\n"
    assert parse_mounts(mounts)[0].mountpoint == "/mnt/with space"
    facts = parse_lsblk(lsblk_json("/dev/sdc", size=64 * GIB, children=(partition("/dev/sdc1", GIB),)),
                        "/dev/sdc", mounts)
    assert refusals(facts, GIB) == ["/dev/sdc is mounted at /mnt/with space; unmount it first "
                                    "(umount /mnt/with space)"]


def test_swap_on_a_disk_makes_it_a_system_disk() -> None:
    facts = parse_lsblk(lsblk_json("/dev/sdd", size=GIB, children=(partition("/dev/sdd2", GIB, "[SWAP]"),)),
                        "/dev/sdd")
    assert "never overwritten" in refusals(facts, 1)[0]


def test_garbage_from_lsblk_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="lsblk gave no usable answer"):
        parse_lsblk("lsblk: /dev/sdz: not a block device", "/dev/sdz")


# --- known_hosts and secrets --------------------------------------------------------------------------


def test_pinning_replaces_only_the_hosts_own_line(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other = "10.0.0.12 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther"
    known.write_text(f"# comment\n{other}\n10.0.0.11,node1 ssh-rsa AAAAold\n")
    key = generate_ed25519("root@node1")
    assert pin_known_host(known, "10.0.0.11", 22, key.public)
    blob = " ".join(key.public.split()[:2])
    assert known.read_text().splitlines() == ["# comment", other, f"10.0.0.11 {blob}"]
    assert not pin_known_host(known, "10.0.0.11", 22, key.public)
    # A hashed entry (HashKnownHosts yes) for the host is replaced too; others stay.
    salt = os.urandom(20)
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(), base64.b64encode(
        hmac.new(salt, b"10.0.0.11", "sha1").digest()).decode())
    known.write_text(f"{hashed} ssh-ed25519 AAAAold\n{other}\n")
    assert pin_known_host(known, "10.0.0.11", 22, key.public)
    assert known.read_text().splitlines() == [other, f"10.0.0.11 {blob}"]
    assert pin_known_host(known, "10.0.0.11", 2222, key.public)
    assert known.read_text().splitlines()[-1] == f"[10.0.0.11]:2222 {blob}"


def test_a_key_pair_is_made_private_once_and_pinning_keeps_the_files_mode(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "id_ed25519"
    pair = ensure_keypair(private, "me@controller")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.with_name("id_ed25519.pub").stat().st_mode) == 0o644
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert ensure_keypair(private, "me@controller") == pair
    assert sorted(p.name for p in private.parent.iterdir()) == ["id_ed25519", "id_ed25519.pub"]
    known = tmp_path / "known_hosts"
    known.write_text("")
    known.chmod(0o644)
    assert pin_known_host(known, "10.0.0.11", 22, pair.public)
    assert stat.S_IMODE(known.stat().st_mode) == 0o644
    assert pin_known_host(tmp_path / "new" / "known_hosts", "10.0.0.11", 22, pair.public)
    assert stat.S_IMODE((tmp_path / "new" / "known_hosts").stat().st_mode) == 0o600


def test_secret_from_a_private_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("PICLUSTER_SECRET_WIFI_PASSWORD", raising=False)
    with pytest.raises(ImageError, match=r"secret 'wifi_password' not found: put it in .*wifi_password"):
        read_secret("wifi_password")
    path = tmp_path / "picluster" / "secrets" / "wifi_password"
    path.parent.mkdir(parents=True)
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with pytest.raises(ImageError, match="readable by others; chmod 600"):
        read_secret("wifi_password")
    path.chmod(0o600)
    assert read_secret("wifi_password") == "s3cret"
    monkeypatch.setenv("PICLUSTER_SECRET_WIFI_PASSWORD", "from-env")
    assert read_secret("wifi_password") == "from-env"


# --- the catalog ----------------------------------------------------------------------------------------


def test_shipped_catalog_has_the_three_lts_images() -> None:
    catalog = load_catalog(REPO / "hosts/images.yml")
    assert set(catalog.images) == {"ubuntu-20.04", "ubuntu-22.04", "ubuntu-24.04"}
    assert catalog.default == "ubuntu-20.04" and catalog.get(None).usb_boot_fix
    for entry in catalog.images.values():
        assert entry.url.startswith("https://cdimage.ubuntu.com/releases/")
        assert entry.url.endswith(f"ubuntu-{entry.version}-preinstalled-server-arm64+raspi.img.xz")
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert not catalog.get("ubuntu-22.04").usb_boot_fix


@pytest.mark.parametrize(("text", "message"), [
    ("images: {a: {url: 'http://x/a.img.xz', sha256: null}}", "expected an https URL"),
    ("images: {a: {url: 'https://x/a.img.xz', sha256: abc}}", "is not a sha256"),
    ("images: {a: {url: 'https://x/a.img.xz', sha: null}}", "unknown key"),
    ("default: b\nimages: {a: {url: 'https://x/a.img.xz'}}", "default: 'b' is not one of the images"),
    ("[]", "expected `images:`"),
])
def test_bad_catalogs_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "images.yml"
    path.write_text(text)
    with pytest.raises(ImageError, match=message):
        load_catalog(path)


def test_unknown_image_name_lists_the_known_ones() -> None:
    with pytest.raises(ImageError, match=re.escape("no image 'ubuntu-19.10'; known: ubuntu-20.04, ubuntu-22.04")):
        load_catalog(REPO / "hosts/images.yml").get("ubuntu-19.10")


def test_image_overrides(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="needs --sha256"):
        override("https://example.invalid/x.img.xz", None, False)
    with pytest.raises(ImageError, match="no such file"):
        override(str(tmp_path / "absent.img"), None, False)
    with pytest.raises(ImageError, match="expected an http"):
        override("ftp://example.invalid/x.img", "a" * 64, False)
    local = tmp_path / "x.img"
    local.write_bytes(b"x")
    assert override(str(local), None, True).usb_boot_fix


def test_rich_progress_runs_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from picluster.stages.image.progress import RichProgress

    p = RichProgress()
    p.start("download", 10 * 1024 * 1024)
    p.advance(5 * 1024 * 1024)
    p.finish()
    p.note("note: a long line " + "x" * 200)
    assert "x" * 200 in capsys.readouterr().err       # notes are never wrapped mid-word


def test_this_machines_root_disk_is_refused_by_the_real_inspector() -> None:
    """Read-only: lsblk and the mount table of this machine, through the real inspector."""
    import shutil
    import stat

    from picluster.stages.image.devices import SystemInspector, inspect

    root = next((m.source for m in parse_mounts(Path("/proc/self/mounts").read_text())
                 if m.mountpoint == "/"), "")
    if not root.startswith("/dev/") or not shutil.which("lsblk") or not stat.S_ISBLK(os.stat(root).st_mode):
        pytest.skip(f"/ is not on a block device here ({root or 'unknown'})")
    facts = inspect(root, SystemInspector())
    assert "never overwritten" in " ".join(refusals(facts, 1, force=True))
