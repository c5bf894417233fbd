"""Inventories for the image tests: the shipped reference inventory with literal keys, in a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]


def public_key(comment: str = "oss@laptop") -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


def write_inventory(folder: Path, *, key: str | None = None, mutate: Any = None,
                    catalog: bool = True) -> Path:
    """hosts/inventory.yml with literal admin keys (and the shipped images.yml beside it)."""
    data = yaml.safe_load((REPO / "hosts/inventory.yml").read_text())
    for user in data["cluster"]["admin_users"]:
        user.pop("ssh_key_files", None)
        user["ssh_keys"] = [key or public_key(f"{user['name']}@laptop")]
    if mutate is not None:
        mutate(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "inventory.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if catalog:
        (folder / "images.yml").write_text((REPO / "hosts/images.yml").read_text())
    return path
