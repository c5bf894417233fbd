"""The lab's apt caching proxy: apt-cacher-ng on the bridge, with a configuration of the lab's own.

Its backends are the host's own Debian archive URLs (from the host's apt sources, read at run time),
so nodes reach packages only through it and nothing else leaves the lab.
"""

from __future__ import annotations

import socket
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urlsplit

from picluster.lab.common import LabError, pid_cmdline, wait_for
from picluster.localfs import write_atomic

START_TIMEOUT = 15.0


def _prefix(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path.rstrip('/')}"


def config(directory: Path, address: IPv4Address, port: int, archives: dict[str, str]) -> str:
    """acng.conf for the lab (also writes the backend files next to it)."""
    lines = [
        f"CacheDir: {directory / 'cache'}",
        f"LogDir: {directory / 'log'}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"BindAddress: {address}",
        f"Port: {port}",
        "ReportPage: acng-report.html",
        "ExThreshold: 4",
        "PassThroughPattern: ^$",  # no CONNECT tunnels: only cacheable archive requests
        f"Remap-debrep: /debian {_prefix(archives['debian'])} ; file:backends_debian",
    ]
    write_atomic(directory / "conf" / "backends_debian", archives["debian"].rstrip("/") + "/\n")
    if "security" in archives:
        lines.append(f"Remap-secdeb: /debian-security {_prefix(archives['security'])} ; "
                     "file:backends_debian_security")
        write_atomic(directory / "conf" / "backends_debian_security", archives["security"].rstrip("/") + "/\n")
    return "\n".join(lines) + "\n"


def is_ours(pid: int | None, directory: Path) -> bool:
    argv = pid_cmdline(pid) if pid else []
    return bool(argv) and argv[0].endswith("apt-cacher-ng") and str(directory / "conf") in argv


def find(directory: Path) -> list[int]:
    """apt-cacher-ng processes running with this lab's configuration (also after a crash)."""
    from picluster.lab.common import all_pids

    return [pid for pid in all_pids() if is_ours(pid, directory)]


def _answers(address: IPv4Address, port: int) -> bool:
    try:
        with socket.create_connection((str(address), port), timeout=0.5):
            return True
    except OSError:
        return False


def start(directory: Path, address: IPv4Address, port: int, archives: dict[str, str]) -> int:
    """Start the proxy (unless it runs already) and wait until it answers; return its pid."""
    running = find(directory)
    if running and _answers(address, port):
        return running[0]
    if _answers(address, port):
        raise LabError(f"another process already listens on {address}:{port}; stop it or set "
                       "lab.apt_proxy_port to a free port")
    for sub in ("conf", "cache", "log"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "conf" / "acng.conf", config(directory, address, port, archives))
    log = open(directory / "log" / "daemon.log", "ab")
    try:
        proc = subprocess.Popen(["apt-cacher-ng", "-c", str(directory / "conf"), "ForeGround=1"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/")
    finally:
        log.close()

    def ready() -> bool:
        if proc.poll() is not None:
            raise LabError(f"apt-cacher-ng exited with {proc.returncode}; see {directory / 'log'}")
        return _answers(address, port)

    wait_for(f"apt-cacher-ng on {address}:{port}", ready, START_TIMEOUT)
    time.sleep(0.2)
    if proc.poll() is not None:
        raise LabError(f"apt-cacher-ng exited with {proc.returncode} right after starting; see {directory / 'log'}")
    return proc.pid
