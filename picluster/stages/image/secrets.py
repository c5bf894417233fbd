"""Secrets the seed needs (the gateway's Wi-Fi password): from the local store, never from git or argv.

A secret called NAME is read from $PICLUSTER_SECRET_NAME (upper case) or from the file
$XDG_CONFIG_HOME/picluster/secrets/NAME (default ~/.config/picluster/secrets/NAME), which must not be
readable by others.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from picluster.stages.image import ImageError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def secrets_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / "secrets"


def read_secret(name: str) -> str:
    """The secret's value (one line, surrounding whitespace removed); ImageError saying where to put it."""
    if not _NAME.match(name):
        raise ImageError(f"secret name {name!r}: use letters, digits, '_', '-' and '.'")
    env = "PICLUSTER_SECRET_" + re.sub(r"[^A-Z0-9]", "_", name.upper())
    if os.environ.get(env):
        return os.environ[env].strip()
    path = secrets_dir() / name
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ImageError(f"secret {name!r} not found: put it in {path} (chmod 600) or set {env}") from None
    except OSError as err:
        raise ImageError(f"secret {name!r}: cannot read {path}: {err.strerror}") from None
    if mode & 0o077:
        raise ImageError(f"secret {name!r}: {path} is readable by others; chmod 600 {path}")
    if not value:
        raise ImageError(f"secret {name!r}: {path} is empty")
    return value
