"""SSH material of one lab: the controller's key pair, each node's pinned host key, known_hosts.

All of it lives under the lab's (git-ignored) state folder and is generated once per lab, so the
first contact with every node is verified against a key we made, never accepted blindly.
"""

from __future__ import annotations

from pathlib import Path

from picluster.localfs import write_atomic
from picluster.sshkeys import ensure_keypair, generate_ed25519, known_hosts_line

__all__ = ["ensure_keypair", "generate_ed25519", "known_hosts_line", "write_known_hosts"]


def write_known_hosts(path: Path, entries: list[tuple[str, int, str]]) -> None:
    """known_hosts with exactly the given (address, port, public key) entries."""
    write_atomic(path, "".join(known_hosts_line(*e) + "\n" for e in entries), mode=0o644)
