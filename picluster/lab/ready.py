"""Is a lab node ready: booted, and answering SSH as the automation user with its pinned host key."""

from __future__ import annotations

import logging
import socket

from picluster.inventory import Host
from picluster.lab.common import LabError

# `systemctl is-system-running` once a node has booted. "degraded" (some unit failed) still counts:
# a container cannot do everything a Pi does, and the stages' own checks say what is missing.
READY_STATES = ("running", "degraded")


def ssh_ready(h: Host, wait: float = 0.0) -> bool:
    """True once `h` has booted and accepts the automation user's key with its pinned host key.

    With `wait`, a node that answers but is still booting is waited for on that one connection, up to
    `wait` seconds (`systemctl is-system-running --wait`), instead of a new handshake per attempt:
    with many nodes booting at once, those handshakes took the CPU the boots needed.
    """
    import paramiko

    paramiko_log = logging.getLogger("paramiko")
    if not paramiko_log.handlers:  # a node still booting resets connections: expected, not news
        paramiko_log.addHandler(logging.NullHandler())
    t = h.ssh
    try:
        with socket.create_connection((t.address, t.port), timeout=1):
            pass
    except OSError:
        return False
    client = paramiko.SSHClient()
    client.load_host_keys(str(t.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(t.address, port=t.port, username=t.user, key_filename=str(t.key_file),
                       timeout=3, banner_timeout=5, auth_timeout=5, look_for_keys=False, allow_agent=False)
        # Ready means booted: cloud-init's later stages restart sshd, so an early answer is not enough.
        # (A session opened before that restart lives on: sshd's restart leaves its sessions running.)
        command = (f"timeout {wait:.0f} systemctl is-system-running --wait" if wait >= 1
                   else "systemctl is-system-running")
        _, out, _ = client.exec_command(command, timeout=wait + 5)
        return out.read().decode().strip() in READY_STATES
    except paramiko.BadHostKeyException:
        raise LabError(f"{h.name} ({t.address}) presented a host key other than its pinned one in "
                       f"{t.known_hosts}; run `invoke lab.down` and `invoke lab.up`") from None
    except (paramiko.SSHException, OSError, EOFError):
        return False
    finally:
        client.close()
