"""Open a Fabric connection to one host with strict host-key checking."""

from __future__ import annotations

import threading
from pathlib import Path

import paramiko
from fabric import Config, Connection

from picluster.remote.target import SshTargetLike

DEFAULT_TIMEOUT = 10.0
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
) -> Connection:
    """Open a connection to `target`, checking its host key; raise `Unreachable` in plain words.

    + name: the host's inventory name, used in messages (default: the address)
    + first_contact: record unknown host keys in known_hosts instead of refusing them;
      a key that differs from a recorded one is refused in both modes
    + config: a Fabric config (default: a fresh one, which reads ~/.ssh/config)
    """
    label = name or target.address
    connect_kwargs: dict[str, object] = {"banner_timeout": timeout, "auth_timeout": timeout}
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
    return conn


def _explain(e: Exception, label: str, conn: Connection, path: Path) -> str:
    """Say in plain words why connecting failed, and what to do."""
    where = f"{conn.user}@{conn.host}:{conn.port}"
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"{label}: the host key of {e.hostname} CHANGED (got {e.key.get_name()} "
            f"{e.key.get_fingerprint().hex()}, {path} has {e.expected_key.get_fingerprint().hex()}); "
            f"refusing to connect. If the host was reinstalled, remove its old line with "
            f"`ssh-keygen -R {e.hostname} -f {path}` and connect again with first contact."
        )
    if isinstance(e, paramiko.AuthenticationException):
        return (
            f"{label}: {where} refused our keys ({e}); check the user and the key "
            f"(the inventory's ssh_key_file, ~/.ssh/config or the SSH agent)."
        )
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return (
            f"{label}: the host key of {conn.host}:{conn.port} is not in {path}; refusing to connect. "
            f"Pin it (cloud-init seeds it) or run once with first contact to record it."
        )
    if isinstance(e, OSError):
        return (
            f"{label}: cannot reach {conn.host}:{conn.port} ({e}); check the host is powered on "
            f"and on the network, and its address in the inventory."
        )
    return f"{label}: SSH to {where} failed: {type(e).__name__}: {e}"
