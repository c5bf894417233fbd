"""Secrets the seed needs (the gateway's Wi-Fi password): from the local store, never from git or argv.

A secret called NAME is read from $PICLUSTER_SECRET_NAME (upper case) or from the file
$XDG_CONFIG_HOME/picluster/secrets/NAME (default ~/.config/picluster/secrets/NAME), which must not be
readable by others.
"""

from __future__ import annotations

from picluster import secrets
from picluster.stages.image import ImageError


def read_secret(name: str) -> str:
    """The secret's value from the local store (see `picluster.secrets`); ImageError saying where to put it."""
    try:
        return secrets.require_secret(name)
    except secrets.SecretError as err:
        raise ImageError(str(err)) from None
