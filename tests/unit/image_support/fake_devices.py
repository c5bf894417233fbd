"""A test double of the device-inspection layer: recorded lsblk/mount-table texts instead of the system's.

`picluster.stages.image.devices` reads facts only through an Inspector; this one answers with texts
recorded from real machines (or shaped exactly like them), keyed by path, so the safety checks run
against ordinary files in tests.
"""

from __future__ import annotations

import json
from typing import Any

# Recorded on the test machine (util-linux 2.38, Debian 12): the system disk, mounted at /.
RECORDED_SYSTEM_DISK = """{
   "blockdevices": [
      {
         "name": "vda",
         "path": "/dev/vda",
         "type": "disk",
         "size": 274877906944,
         "model": null,
         "serial": null,
         "rm": false,
         "hotplug": false,
         "tran": null,
         "ro": false,
         "mountpoints": [
             "/run/netns", "/"
         ]
      }
   ]
}
"""

# The shape util-linux 2.34 (Ubuntu 20.04) prints: strings for booleans, MOUNTPOINT (singular).
RECORDED_OLD_USB_STICK = """{
   "blockdevices": [
      {"name": "sdb", "path": "/dev/sdb", "type": "disk", "size": 61530439680, "model": "Extreme",
       "serial": "AA010203040506070809", "rm": "1", "hotplug": "1", "tran": "usb", "ro": "0",
       "mountpoint": null,
         "children": [
            {"name": "sdb1", "path": "/dev/sdb1", "type": "part", "size": 268435456, "model": null,
             "serial": null, "rm": "1", "hotplug": "1", "tran": null, "ro": "0",
             "mountpoint": "/media/oss/system-boot"},
            {"name": "sdb2", "path": "/dev/sdb2", "type": "part", "size": 3000000000, "model": null,
             "serial": null, "rm": "1", "hotplug": "1", "tran": null, "ro": "0", "mountpoint": null}
         ]
      }
   ]
}
"""


def lsblk_json(path: str, *, size: int, model: str | None = "Extreme SSD", serial: str | None = "S4EVNF0M123",
               rm: bool = False, hotplug: bool = True, tran: str | None = "usb", ro: bool = False,
               mountpoints: tuple[str | None, ...] = (None,), dtype: str = "disk",
               children: tuple[dict[str, Any], ...] = ()) -> str:
    """An `lsblk --json --bytes -o NAME,PATH,TYPE,SIZE,MODEL,SERIAL,RM,HOTPLUG,TRAN,RO,MOUNTPOINTS` answer."""
    node: dict[str, Any] = {
        "name": path.rsplit("/", 1)[-1], "path": path, "type": dtype, "size": size, "model": model,
        "serial": serial, "rm": rm, "hotplug": hotplug, "tran": tran, "ro": ro,
        "mountpoints": list(mountpoints),
    }
    if children:
        node["children"] = list(children)
    return json.dumps({"blockdevices": [node]}, indent=3)


def partition(path: str, size: int, *mountpoints: str) -> dict[str, Any]:
    return {"name": path.rsplit("/", 1)[-1], "path": path, "type": "part", "size": size, "model": None,
            "serial": None, "rm": False, "hotplug": True, "tran": None, "ro": False,
            "mountpoints": list(mountpoints) or [None]}


class FakeDeviceInspector:
    """Answers lsblk for the paths it was given (anything else: not a block device) and a mount table."""

    def __init__(self, lsblk: dict[str, str], mounts: str = "") -> None:
        self._lsblk = lsblk
        self._mounts = mounts
        self.asked: list[str] = []

    def lsblk(self, path: str) -> str:
        from picluster.stages.image import ImageError

        self.asked.append(path)
        if path not in self._lsblk:
            raise ImageError(f"{path} is not a block device; to write an image file use --output {path}")
        return self._lsblk[path]

    def mounts(self) -> str:
        return self._mounts
