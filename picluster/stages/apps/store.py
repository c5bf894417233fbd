"""The local secrets store: passwords and keys the platform needs, never in git, argv or a values file.

A secret NAME is read from $PICLUSTER_SECRET_NAME (upper case) or from
$XDG_CONFIG_HOME/picluster/secrets/NAME (default ~/.config/picluster/secrets/NAME, mode 0600) - the same
store the gateway stage reads the fluentd shared key from. A secret the store lacks is generated there on
first use (random, 0600), unless the caller only looks (a plan or dry run).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SecretStoreError(Exception):
    """A secret that cannot be read or stored; the message says where and what to do."""


def secrets_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / "secrets"


def env_name(name: str) -> str:
    return "PICLUSTER_SECRET_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def read(name: str) -> str | None:
    """The secret's value, or None when the store does not have it."""
    if not _NAME.match(name):
        raise SecretStoreError(f"secret name {name!r}: use letters, digits, '_', '-' and '.'")
    if os.environ.get(env_name(name)):
        return os.environ[env_name(name)].strip()
    path = secrets_dir() / name
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SecretStoreError(f"secret {name!r}: cannot read {path}: {err.strerror}") from None
    if mode & 0o077:
        raise SecretStoreError(f"secret {name!r}: {path} is readable by others; chmod 600 {path}")
    return value or None


def ensure(name: str) -> str:
    """The secret's value; generated into the store (0600) the first time."""
    value = read(name)
    if value is not None:
        return value
    folder = secrets_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value
