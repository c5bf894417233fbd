"""The image stage: flash a host's USB disk with the Ubuntu raspi image and seed its first boot.

One idea per module: `catalog` (which image), `download` (cached, resumable, verified), `source` (the
image as a stream and its size), `partitions` (MBR, labels), `devices` (what a target is, and whether we
may write it), `writer` (stream to the target, verify), `bootfs`/`rootfs` (files on the FAT and ext4
partitions without mounting), `bootfix` (cgroup flags, the Ubuntu 20.04 USB-boot fix), `secrets`, `seed`
(what goes where) and `flash` (the whole run).
Pinned SSH host keys come from `picluster.sshkeys`, shared with the lab.

Needs on the controller: xz-utils (optional, faster; Python's lzma otherwise), mtools (FAT), e2fsprogs
(debugfs, for the 20.04 apt hook), util-linux (lsblk). Tested on image files only: the tests build a
small raspi-shaped image (MBR, FAT32 system-boot, ext4 writable); real Ubuntu images, real USB disks and
the Pi firmware booting them are not exercised on a machine without them.
"""

from __future__ import annotations


class ImageError(Exception):
    """A flash or seed that cannot go on; the message is one line that says what to do.

    code: 2 for bad input (the target was not touched), 1 for a failure while working.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
