"""SSH keys made on the controller: key pairs, and host keys pinned into known_hosts.

The image stage and the lab both pre-generate each host's SSH host key, seed it into the host and pin it
here, so that the first contact with a host is verified against a key we made, never accepted blindly.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from pathlib import Path

from picluster.cloudinit import HostKey
from picluster.localfs import write_atomic


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


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically with `mode` from the first byte (never briefly world-readable)."""
    write_atomic(path, text, mode, dir_mode=0o700)


def ensure_keypair(private_path: Path, comment: str) -> HostKey:
    """The key pair at private_path (+ .pub), generated there (0600 / 0644) the first time."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.is_file() and public_path.is_file():
        return HostKey(private=private_path.read_text(encoding="utf-8"),
                       public=public_path.read_text(encoding="utf-8").strip())
    pair = generate_ed25519(comment)
    write_private(private_path, pair.private, 0o600)
    write_private(public_path, pair.public + "\n", 0o644)
    return pair


def known_hosts_name(address: str, port: int) -> str:
    """How known_hosts names a host: its address, with the port in brackets unless it is 22."""
    return address if port == 22 else f"[{address}]:{port}"


def known_hosts_line(address: str, port: int, public: str) -> str:
    """One known_hosts line for the host's public key (its comment dropped)."""
    kind, blob = public.split()[:2]
    return f"{known_hosts_name(address, port)} {kind} {blob}"


def _names_host(line: str, name: str) -> bool:
    """Whether a known_hosts line is about `name`: listed plainly, or hashed (HashKnownHosts)."""
    fields = line.split()
    if not fields or line.startswith("#"):
        return False
    hosts = fields[1] if fields[0].startswith("@") and len(fields) > 1 else fields[0]
    for entry in hosts.split(","):
        if entry.startswith("|1|"):
            try:
                salt, digest = (base64.b64decode(part) for part in entry[3:].split("|", 1))
            except (ValueError, binascii.Error):
                continue
            if hmac.compare_digest(hmac.new(salt, name.encode(), "sha1").digest(), digest):
                return True
        elif entry == name:
            return True
    return False


def pin_known_host(path: Path, address: str, port: int, public: str) -> bool:
    """Make `path` hold exactly one line for the address with this key; True when the file changed."""
    name = known_hosts_name(address, port)
    wanted = known_hosts_line(address, port, public)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if not _names_host(line, name)]
    new = [*kept, wanted]
    if new == lines:
        return False
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_private(path, "\n".join(new) + "\n", mode)
    return True
