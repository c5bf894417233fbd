"""SSH material of one lab: the controller's key pair, each node's pinned host key, known_hosts.

All of it lives under the lab's (git-ignored) state folder and is generated once per lab, so the
first contact with every node is verified against a key we made, never accepted blindly.
"""

from __future__ import annotations

from pathlib import Path

from picluster.cloudinit import HostKey
from picluster.lab.common import write_atomic


def generate_ed25519(comment: str) -> HostKey:
    """A new ed25519 key pair in OpenSSH formats."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private=private, public=f"{public} {comment}")


def ensure_keypair(private_path: Path, comment: str) -> HostKey:
    """The key pair at private_path (+ .pub), created (0600 / 0644) when missing."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.is_file() and public_path.is_file():
        return HostKey(private=private_path.read_text(encoding="utf-8"),
                       public=public_path.read_text(encoding="utf-8").strip())
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = generate_ed25519(comment)
    write_atomic(private_path, pair.private, mode=0o600)
    write_atomic(public_path, pair.public + "\n", mode=0o644)
    return pair


def known_hosts_line(address: str, port: int, public: str) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    kind, blob = public.split()[:2]
    return f"{host} {kind} {blob}"


def write_known_hosts(path: Path, entries: list[tuple[str, int, str]]) -> None:
    """known_hosts with exactly the given (address, port, public key) entries."""
    write_atomic(path, "".join(known_hosts_line(*e) + "\n" for e in entries), mode=0o644)
