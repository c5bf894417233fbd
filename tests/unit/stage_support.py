"""Helpers of the stage tests: the reference inventory with a literal key, and facts in → decision out."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from picluster.inventory import Inventory, load_inventory
from picluster.remote import Change, ProbeOutput

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl picluster@controller"


def reference_data() -> dict[str, Any]:
    """Return hosts/inventory.yml as data, its key files replaced by one literal key."""
    data: dict[str, Any] = yaml.safe_load((REPO / "hosts" / "inventory.yml").read_text(encoding="utf-8"))
    for user in data["cluster"]["admin_users"]:
        user.pop("ssh_key_files", None)
        user["ssh_keys"] = [KEY]
    return data


def write_inventory(tmp: Path, data: dict[str, Any], name: str = "inventory.yml") -> Inventory:
    """Write `data` as an inventory file in `tmp` and load it."""
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_inventory(path)


NO_MARKS: frozenset[str] = frozenset()


def out(stdout: str = "", code: int = 0) -> ProbeOutput:
    """A probe's output."""
    return ProbeOutput(stdout, code)


def b64(data: bytes) -> ProbeOutput:
    """A probe's output of file content, as the file probes print it (base64)."""
    return out(base64.b64encode(data).decode())


MISSING = out("", 1)


def decide(step: Any, outputs: Mapping[str, ProbeOutput], marks: frozenset[str] = NO_MARKS) -> Any:
    """Feed a step exactly the probes it asks for and return its decision."""
    assert set(outputs) == set(step.probes()), sorted(step.probes())
    return step.decide(step.parse(outputs, marks))


class Upload:
    """A step that uploads one local file, streamed (as the k3s stage stages its air-gap bundle)."""

    def __init__(self, local: Path, remote: Path) -> None:
        self.local, self.remote = local, remote
        self.name = f"upload {remote.name}"

    def probes(self) -> dict[str, str]:
        return {}

    def parse(self, outputs: object, marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Change:
        from picluster.state._fs import write_command

        return Change("upload", [write_command(str(self.remote), self.local, mode=0o644, owner=None, group=None)])
