"""The local CA and Minio's certificate: made once, keys private, reused afterwards."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from picluster.stages.apps import pki

NAME = "s3.picluster.example.com"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_keys_are_private_the_certificates_public_and_nothing_else_is_left(made_pki: Path) -> None:
    assert sorted(p.name for p in made_pki.iterdir()) == ["CA.key", "CA.pem", f"{NAME}.key", f"{NAME}.pem"]
    assert mode(made_pki) == 0o700
    assert mode(made_pki / "CA.key") == mode(made_pki / f"{NAME}.key") == 0o600
    assert mode(made_pki / "CA.pem") == mode(made_pki / f"{NAME}.pem") == 0o644


def test_what_was_made_is_reused_as_it_is(made_pki: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    shutil.copytree(made_pki, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    found = pki.ensure(folder, NAME, "10.0.0.11")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert found.ca_pem.encode() == before["CA.pem"] and found.key_pem.encode() == before[f"{NAME}.key"]
    assert found.chain_pem == found.cert_pem + found.ca_pem
