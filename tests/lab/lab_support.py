"""Helpers for the lab tests: when they can run, where the lab inventory is, SSH into a node."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from picluster.inventory import Host

REPO = Path(__file__).resolve().parents[2]
LAB_SKIP = ("the lab needs Linux and root (network namespaces, a bridge, systemd-nspawn)"
            if platform.system() != "Linux" or os.geteuid() != 0 else None)


def lab_inventory() -> Path:
    return Path(os.environ.get("PICLUSTER_LAB_INVENTORY") or REPO / "hosts" / "lab.yml")


def ssh_run(host: Host, command: str, timeout: float = 30) -> tuple[int, str]:
    """Run command on host over SSH (lab key, pinned host key); return (exit code, stdout+stderr)."""
    import paramiko

    t = host.ssh
    client = paramiko.SSHClient()
    client.load_host_keys(str(t.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(t.address, port=t.port, username=t.user, key_filename=str(t.key_file), timeout=5,
                   banner_timeout=10, auth_timeout=10, look_for_keys=False, allow_agent=False)
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        text = out.read().decode() + err.read().decode()
        return out.channel.recv_exit_status(), text
    finally:
        client.close()
