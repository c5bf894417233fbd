"""Open a Fabric connection to one host with strict host-key checking."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paramiko
from fabric import Config, Connection

from picluster.remote.target import SshTargetLike

DEFAULT_TIMEOUT = 10.0
#: Seconds of silence after which a connected host is given up as unreachable (`--host-timeout`).
DEFAULT_HOST_TIMEOUT = 60.0
_known_hosts_lock = threading.Lock()


class Unreachable(Exception):
    """The host could not be reached, authenticated or trusted; the message says why and what to do."""


class _AppendNewKey(paramiko.MissingHostKeyPolicy):
    """First contact: trust an unknown key and append it to the known_hosts file (never rewrite it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self.path.open("a", encoding="ascii") as f:
                f.write(line)


def known_hosts_path(target: SshTargetLike, conn: Connection) -> Path:
    """Return the known_hosts file for `target`: its own, else ssh_config UserKnownHostsFile, else ~/.ssh."""
    if target.known_hosts is not None:
        return Path(target.known_hosts)
    configured = conn.ssh_config.get("userknownhostsfile")
    if configured:
        return Path(str(configured).split()[0]).expanduser()
    return Path("~/.ssh/known_hosts").expanduser()


def connect(
    target: SshTargetLike,
    *,
    name: str | None = None,
    first_contact: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    config: Config | None = None,
    host_timeout: float = DEFAULT_HOST_TIMEOUT,
) -> Connection:
    """Open a connection to `target`, checking its host key; raise `Unreachable` in plain words.

    + name: the host's inventory name, used in messages (default: the address)
    + first_contact: record unknown host keys in known_hosts instead of refusing them;
      a key that differs from a recorded one is refused in both modes
    + config: a Fabric config (default: a fresh one, which reads ~/.ssh/config)
    + timeout: bounds the TCP connect, the SSH banner, the authentication and opening a channel
    + host_timeout: once connected, a host that acknowledges nothing for this long is dropped (see `keep_alive`)
    """
    label = name or target.address
    connect_kwargs: dict[str, object] = {"banner_timeout": timeout, "auth_timeout": timeout,
                                         "channel_timeout": timeout}
    if target.key_file is not None:
        connect_kwargs["key_filename"] = [str(target.key_file)]
    conn = Connection(
        target.address,
        user=target.user,
        port=target.port,
        config=config or Config(),
        connect_timeout=max(1, round(timeout)),
        connect_kwargs=connect_kwargs,
    )
    path = known_hosts_path(target, conn)
    client = paramiko.SSHClient()
    if path.exists():
        client.get_host_keys().load(str(path))
    client.set_missing_host_key_policy(_AppendNewKey(path) if first_contact else paramiko.RejectPolicy())
    conn.client = client
    try:
        conn.open()
    except Exception as e:
        client.close()
        raise Unreachable(_explain(e, label, conn, path)) from e
    keep_alive(conn, host_timeout)
    return conn


def keep_alive(conn: Connection, host_timeout: float) -> None:
    """Make a silent host fail the connection within about `host_timeout` seconds.

    paramiko sends an SSH keepalive after `host_timeout / 6` idle seconds, so some data always waits to be
    acknowledged; TCP_USER_TIMEOUT makes the kernel drop the connection when data stays unacknowledged for
    the rest of the bound, and the command waiting on it then fails as a lost connection.
    """
    transport = conn.transport
    if transport is None:
        return
    interval = max(1, round(host_timeout / 6))
    transport.set_keepalive(interval)
    sock = transport.sock
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
        unacked_ms = max(1000, int((host_timeout - interval) * 1000))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, unacked_ms)


def known_hosts_name(host: str, port: int) -> str:
    """Return how known_hosts names `host`: bare on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """Return the key's fingerprint as OpenSSH prints it: `SHA256:` and unpadded base64."""
    import base64
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _explain(e: Exception, label: str, conn: Connection, path: Path) -> str:
    """Say in plain words why connecting failed, and what to do."""
    where = f"{conn.user}@{conn.host}:{conn.port}"
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"{label}: the host key of {e.hostname} CHANGED (got {e.key.get_name()} "
            f"{fingerprint(e.key)}, {path} has {fingerprint(e.expected_key)}); "
            f"refusing to connect. If the host was reinstalled, remove its old line with "
            f"`ssh-keygen -R {known_hosts_name(conn.host, conn.port)} -f {path}` and trust it again "
            f"(`invoke hosts.trust {label}`)."
        )
    if isinstance(e, paramiko.AuthenticationException):
        return (
            f"{label}: {where} refused our keys ({e}); check the user and the key "
            f"(the inventory's ssh_key_file, ~/.ssh/config or the SSH agent)."
        )
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return (
            f"{label}: the host key of {conn.host}:{conn.port} is not in {path}; refusing to connect. "
            f"Pin it (cloud-init seeds it) or check and trust it with `invoke hosts.trust {label}`."
        )
    if isinstance(e, OSError):
        return (
            f"{label}: cannot reach {conn.host}:{conn.port} ({e}); check the host is powered on "
            f"and on the network, and its address in the inventory."
        )
    return f"{label}: SSH to {where} failed: {type(e).__name__}: {e}"
