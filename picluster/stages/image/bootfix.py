"""Boot-partition tweaks: the K3S cgroup flags in cmdline.txt, and the Ubuntu 20.04 USB-boot fix.

The fix is the one the reference platform applied with BootFix.sh (section 2.2 of the v1.4 notes): the
Pi 4 firmware of that era cannot boot 20.04's compressed arm64 kernel from USB, so the boot partition
gets a decompressed `vmlinux`, a `config.txt` that boots it directly, and a script that decompresses
every new kernel; an apt hook on the root partition runs the script after each dpkg run.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib

from picluster.stages.image import ImageError

CGROUP_FLAGS = ("cgroup_enable=cpuset", "cgroup_memory=1", "cgroup_enable=memory")
BOOT_MOUNT = "/boot/firmware"
DECOMPRESS_SCRIPT = "auto_decompress_kernel"
CHECK_FILE = "check.md5"
APT_HOOK = "/etc/apt/apt.conf.d/999_decompress_rpi_kernel"

_MARK = "# picluster: USB boot of Ubuntu 20.04 boots the decompressed kernel (see auto_decompress_kernel)"


def cmdline_with_cgroups(cmdline: str) -> str:
    """cmdline.txt with each cgroup flag present exactly once (missing ones appended); one line."""
    words = cmdline.split()
    if not words:
        raise ImageError("cmdline.txt is empty; the image is not a bootable raspi image")
    if all(words.count(flag) == 1 for flag in CGROUP_FLAGS) and len(cmdline.strip().splitlines()) == 1:
        return cmdline if cmdline.endswith("\n") else cmdline + "\n"
    kept = [w for w in words if w not in CGROUP_FLAGS]
    return " ".join([*kept, *CGROUP_FLAGS]) + "\n"


def config_for_vmlinux(config: str) -> str:
    """config.txt laid out as BootFix.sh leaves it: each Pi model boots `vmlinux` with the initrd.

    Already fixed (our mark, or `kernel=vmlinux` present): returned unchanged, so a second run changes
    nothing and later additions (the os stage's gpu_mem) survive.
    """
    lines = [line.strip() for line in config.splitlines()]
    if _MARK in lines or "kernel=vmlinux" in lines:
        return config
    arm64 = "arm_64bit=1" in lines
    model = ["boot_delay", "kernel=vmlinux", "initramfs initrd.img followkernel"]
    out = [
        _MARK, "",
        "[pi4]", "max_framebuffers=2", "dtoverlay=vc4-fkms-v3d", *model, "",
        "[pi2]", *model, "",
        "[pi3]", *model, "",
        "[all]", *(["arm_64bit=1"] if arm64 else []), "device_tree_address=0x03000000",
        "enable_uart=1", "cmdline=cmdline.txt", "", "include syscfg.txt", "include usercfg.txt",
    ]
    return "\n".join(out) + "\n"


def decompress_kernel(vmlinuz: bytes) -> bytes:
    """`zcat vmlinuz`: the gzip-compressed kernel, decompressed."""
    try:
        return gzip.decompress(vmlinuz)
    except (OSError, EOFError, zlib.error) as err:
        raise ImageError(f"vmlinuz on the boot partition is not a gzip kernel ({err}); "
                         "the USB-boot fix is for Ubuntu 20.04 images") from None


def check_md5(vmlinuz: bytes) -> str:
    """check.md5 as the script writes it (md5sum format), so its first run has nothing to redo."""
    return f"{hashlib.md5(vmlinuz, usedforsecurity=False).hexdigest()}  {BOOT_MOUNT}/vmlinuz\n"


def decompress_script() -> str:
    """`auto_decompress_kernel`: after a kernel upgrade, decompress vmlinuz to vmlinux (keeping a backup)."""
    return f"""#!/bin/bash -e
# Installed by picluster (Ubuntu 20.04 USB boot): keep {BOOT_MOUNT}/vmlinux in step with vmlinuz.
# Run by the apt hook {APT_HOOK} after every dpkg run.
BOOT={BOOT_MOUNT}
if md5sum --status -c "$BOOT/{CHECK_FILE}" 2>/dev/null; then
    exit 0
fi
echo "auto_decompress_kernel: a new kernel; decompressing $BOOT/vmlinuz to $BOOT/vmlinux"
if [ -e "$BOOT/vmlinux" ]; then
    cp -p "$BOOT/vmlinux" "$BOOT/vmlinux.bak"
fi
if ! zcat -q "$BOOT/vmlinuz" > "$BOOT/vmlinux.new"; then
    echo "auto_decompress_kernel: decompressing failed; $BOOT/vmlinux left as it was" >&2
    rm -f "$BOOT/vmlinux.new"
    exit 1
fi
mv "$BOOT/vmlinux.new" "$BOOT/vmlinux"
md5sum "$BOOT/vmlinuz" > "$BOOT/{CHECK_FILE}"
"""


def apt_hook() -> str:
    """The apt configuration that runs the script after every dpkg run."""
    return f'DPkg::Post-Invoke {{"/bin/bash {BOOT_MOUNT}/{DECOMPRESS_SCRIPT}"; }};\n'
