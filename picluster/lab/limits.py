"""Host limits a lab of many nodes needs: every node's systemd shares this host's inotify instances.

The nodes run as this host's root (no user namespace), so their systemd, journald, networkd, udev and
the rest all count against root's `fs.inotify.max_user_instances` (128 by default). Past about 15 nodes
a booting node's systemd finds none left ("Failed to create inotify object: Too many open files") and
its services, sshd among them, never start. `lab.up` raises the limit for the lab's size (never lowers
it) and records the value it found, which `lab.down` puts back.
"""

from __future__ import annotations

from pathlib import Path

INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
PER_NODE = 32          # a node's systemd uses about 8; room for what the stages start
HOST_SHARE = 128       # the kernel's default, left to the host's own processes


def needed_instances(nodes: int) -> int:
    """The inotify instances root needs with `nodes` lab nodes running."""
    return HOST_SHARE + PER_NODE * nodes


def raise_inotify(nodes: int, path: Path = INOTIFY_INSTANCES) -> int | None:
    """Raise the host's inotify instance limit for `nodes` nodes; return the value found when it was raised."""
    try:
        current = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    wanted = needed_instances(nodes)
    if current >= wanted:
        return None
    path.write_text(f"{wanted}\n")
    return current


def restore_inotify(previous: int | None, path: Path = INOTIFY_INSTANCES) -> bool:
    """Put back the limit `raise_inotify` found (when it raised it); True when it did."""
    if previous is None:
        return False
    try:
        path.write_text(f"{previous}\n")
    except OSError:
        return False
    return True
