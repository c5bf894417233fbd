"""A data partition as LVM (PV → VG → one LV over all of it), ext4, mounted at boot (the reference's
`ricsanfre.storage`: VG vg_local on /dev/sda3, mounted at /storage)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.state._fs import as_bytes, as_text, content_probe, parse_content, q, rewrite_command
from picluster.state.files import edit_lines
from picluster.state.skip import skipped

FSTAB = "/etc/fstab"
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class VolumeFacts:
    """What the host has of the volume, from the device up to the mount."""

    container: str
    is_block: bool
    device_type: str
    pv_vg: str | None
    lv: bool
    lv_type: str
    fstab: bytes | None
    mounted_from: str


class DataVolume:
    """Ensure `device` is an LVM PV of `vg`, with LV `lv` over the whole VG, formatted `fstype`, mounted at
    `mountpoint` now and from /etc/fstab at boot. A device that holds anything but LVM is never touched.

    Example: ``DataVolume("/dev/sda3", vg="vg_local", lv="lv_storage", mountpoint="/storage")``
    """

    def __init__(self, device: str, *, vg: str, lv: str, mountpoint: str, fstype: str = "ext4") -> None:
        bad = [n for n in (vg, lv, fstype) if not NAME.match(n)]
        odd_path = not device.startswith("/dev/") or not mountpoint.startswith("/")
        if bad or odd_path or re.search(r"\s", device + mountpoint):
            raise ValueError(f"bad volume settings: {device!r} {vg!r} {lv!r} {mountpoint!r} {fstype!r}")
        self.device, self.vg, self.lv, self.mountpoint, self.fstype = device, vg, lv, mountpoint, fstype

    @property
    def lv_path(self) -> str:
        """Return the LV's device path."""
        return f"/dev/{self.vg}/{self.lv}"

    @property
    def fstab_line(self) -> str:
        """Return the fstab entry."""
        return f"{self.lv_path} {self.mountpoint} {self.fstype} defaults 0 2"

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"data volume {self.device} at {self.mountpoint}"

    def probes(self) -> Mapping[str, str]:
        """Read the device, LVM, the filesystem, fstab and the mount."""
        d, lv = q(self.device), q(self.lv_path)
        return {
            "virt": "systemd-detect-virt --container",
            "block": f"test -b {d}",
            "device_type": f"blkid -o value -s TYPE {d}",
            "pv": f"pvs --noheadings -o vg_name {d}",
            "lv": f"lvs --noheadings -o lv_name {q(self.vg + '/' + self.lv)}",
            "lv_type": f"blkid -o value -s TYPE {lv}",
            "fstab": content_probe(FSTAB),
            "mounted": f"findmnt -n -o SOURCE --mountpoint {q(self.mountpoint)}",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> VolumeFacts:
        """Type the outputs."""
        virt, pv = outputs["virt"], outputs["pv"]
        return VolumeFacts(
            container=virt.stdout.strip() if virt.ok else "",
            is_block=outputs["block"].ok,
            device_type=outputs["device_type"].stdout.strip(),
            pv_vg=pv.stdout.strip() if pv.ok else None,
            lv=outputs["lv"].ok and bool(outputs["lv"].stdout.strip()),
            lv_type=outputs["lv_type"].stdout.strip(),
            fstab=parse_content(outputs["fstab"], FSTAB),
            mounted_from=outputs["mounted"].stdout.strip(),
        )

    def decide(self, facts: VolumeFacts) -> Decision:
        """Create what is missing, bottom up; refuse to touch a device that holds something else."""
        if not facts.is_block:
            if facts.container:
                return skipped(f"{self.device} is not a block device in this container ({facts.container}): "
                               "a container has no disks, so no LVM volume at " + self.mountpoint)
            raise StepError(f"{self.device} is not a block device: was the disk partitioned at first boot "
                            "(cloud-init)? fix data_partition in the inventory or partition the disk")
        diff: list[str] = []
        script: list[str] = ["set -e"]
        if facts.pv_vg is None:
            if facts.device_type and facts.device_type != "LVM2_member":
                raise StepError(f"refusing to make {self.device} an LVM volume: it holds a {facts.device_type} "
                                "filesystem; if its data can go, wipe it (wipefs -a) and run again")
            diff.append(f"pvcreate {self.device}")
            script.append(f"pvcreate -q {q(self.device)}")
        elif facts.pv_vg not in ("", self.vg):
            raise StepError(f"{self.device} belongs to volume group {facts.pv_vg}, not {self.vg}; fix it by hand")
        if not facts.pv_vg:
            diff.append(f"vgcreate {self.vg} {self.device}")
            script.append(f"vgcreate -q {q(self.vg)} {q(self.device)}")
        if not facts.lv:
            diff.append(f"lvcreate {self.lv_path} over 100% of {self.vg}")
            script.append(f"lvcreate -q -y -l 100%VG -n {q(self.lv)} {q(self.vg)}")
        if not facts.lv or not facts.lv_type:
            diff.append(f"mkfs.{self.fstype} {self.lv_path}")
            script.append(f"mkfs.{self.fstype} -q {q(self.lv_path)}")
        elif facts.lv_type != self.fstype:
            raise StepError(f"{self.lv_path} holds {facts.lv_type}, not {self.fstype}; fix it by hand")
        commands = [Command("\n".join(script))] if len(script) > 1 else []
        pattern = re.compile(r"^\s*\S+\s+" + re.escape(self.mountpoint) + r"\s")
        new = edit_lines(as_text(facts.fstab or b""), self.fstab_line, pattern, present=True)
        if new is not None:
            diff.append(f"{FSTAB}: {self.fstab_line}")
            commands.append(rewrite_command(FSTAB, facts.fstab, as_bytes(new)))
        if not facts.mounted_from:
            diff.append(f"mount {self.mountpoint}")
            commands.append(Command(f"set -e\nmkdir -p -- {q(self.mountpoint)}\nmount -- {q(self.mountpoint)}"))
        if not commands:
            return Ok(f"{self.lv_path} ({self.fstype}) is mounted at {self.mountpoint} and in {FSTAB}")
        return Change("\n".join(diff), commands)
