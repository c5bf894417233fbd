"""Trust a host on first contact: fetch its host key, show the SHA256 fingerprint, record it once confirmed."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection

from picluster.remote.connect import (
    DEFAULT_TIMEOUT,
    Unreachable,
    _known_hosts_lock,
    fingerprint,
    known_hosts_name,
    known_hosts_path,
)
from picluster.remote.target import SshTargetLike


@dataclass(frozen=True)
class Offered:
    """The host key a host offers: where it came from, its type, fingerprint and where it would be recorded."""

    name: str            # how known_hosts names it: host, or [host]:port
    key: paramiko.PKey
    path: Path           # the known_hosts file
    recorded: paramiko.PKey | None  # what that file already holds for this name and key type

    @property
    def fingerprint(self) -> str:
        """The key's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
        return fingerprint(self.key)

    @property
    def line(self) -> str:
        """The known_hosts line that trusts this key."""
        return f"{self.name} {self.key.get_name()} {self.key.get_base64()}\n"


def offered_key(target: SshTargetLike, *, timeout: float = DEFAULT_TIMEOUT, config: Config | None = None) -> Offered:
    """Connect without logging in and return the host key `target` offers; raise Unreachable with why."""
    conn = Connection(target.address, user=target.user, port=target.port, config=config or Config())
    path = known_hosts_path(target, conn)
    name = known_hosts_name(conn.host, conn.port)
    try:
        sock = socket.create_connection((conn.host, conn.port), timeout=timeout)
    except OSError as e:
        raise Unreachable(f"{target.address}: cannot reach {conn.host}:{conn.port} ({e})") from e
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise Unreachable(f"{target.address}: no SSH host key from {conn.host}:{conn.port} ({e})") from e
    finally:
        transport.close()
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    entry = keys.lookup(name)
    recorded = entry.get(key.get_name()) if entry is not None else None
    return Offered(name, key, path, recorded)


def trust(offered: Offered, confirm: Callable[[Offered], bool]) -> str:
    """Record `offered` in its known_hosts file if `confirm` says so; return what happened, one line.

    A key already recorded is left as it is; a different recorded key is refused (it may be an attack).
    """
    if offered.recorded is not None:
        if offered.recorded.asbytes() == offered.key.asbytes():
            return f"{offered.name}: already trusted ({offered.key.get_name()} {offered.fingerprint}) in {offered.path}"
        raise Unreachable(
            f"{offered.name}: offers {offered.key.get_name()} {offered.fingerprint} but {offered.path} has "
            f"{fingerprint(offered.recorded)}; if the host was reinstalled, remove the old line with "
            f"`ssh-keygen -R {offered.name} -f {offered.path}` and trust it again")
    if not confirm(offered):
        return f"{offered.name}: not trusted; nothing recorded"
    with _known_hosts_lock:
        offered.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with offered.path.open("a", encoding="ascii") as f:
            f.write(offered.line)
    return f"{offered.name}: trusted {offered.key.get_name()} {offered.fingerprint} (recorded in {offered.path})"
