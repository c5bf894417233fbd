"""The host tools the lab needs, installed with apt-get when we are root on Debian/Ubuntu."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from picluster.lab.common import LabError, run

# command -> Debian package that provides it
REQUIRED: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "unshare": "util-linux",
    "mount": "mount",
}
PACKAGES = sorted(set(REQUIRED.values()))
INSTALL_TIMEOUT = 600.0


def missing() -> dict[str, str]:
    """Commands that are not on PATH (sbin included), with the package that provides each."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return {cmd: pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd, path=path) is None}


def _is_debian_like() -> bool:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return False
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ids = (fields.get("ID", "") + " " + fields.get("ID_LIKE", "")).replace('"', "").split()
    return "debian" in ids or "ubuntu" in ids


def check_platform() -> None:
    """The lab runs on Linux as root; say so in one line otherwise."""
    if platform.system() != "Linux":
        raise LabError("the lab needs Linux (systemd-nspawn, network namespaces); run it on a Linux host")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, bridge, mounts); run it with sudo")


def ensure(console: object | None = None) -> list[str]:
    """Install what is missing; return the packages installed (empty when all were there)."""
    check_platform()
    need = missing()
    if not need:
        return []
    packages = sorted(set(need.values()))
    if not _is_debian_like() or shutil.which("apt-get") is None:
        raise LabError(f"the lab needs {', '.join(sorted(need))} (Debian packages: {' '.join(packages)}); "
                       "install them and retry")
    if console is not None:
        console.print(f"[bold]lab[/]: installing {' '.join(packages)} with apt-get")  # type: ignore[attr-defined]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        timeout=INSTALL_TIMEOUT, env=env)
    still = missing()
    if still:
        raise LabError(f"apt-get installed {' '.join(packages)} but {', '.join(still)} is still missing")
    return packages
