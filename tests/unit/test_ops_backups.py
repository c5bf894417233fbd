"""Backups: restic's steps (no credential in a command, a matching file left alone), the restore's argument
checks, and Velero's Backup and Restore objects — valid against the pinned CRDs (the API server would prune an
undeclared field silently) and driven against kmock over HTTP until Velero's phase, with its own words on failure."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import kmock as km
import pytest
import yaml
from kube_support import run, server_faults, write_kubeconfig
from stage_support import decide, out

from picluster.kube import Kube
from picluster.ops.backups import (
    VELERO_NS,
    BackupNow,
    Restore,
    VeleroFailed,
    backup_object,
    check_restore_args,
    parse_snapshots,
    restore_object,
    snapshots_probe,
    velero_run,
)
from picluster.remote import Change, Ok
from picluster.state.skip import is_skipped

CRDS = Path("/work/shared/crds/velero-2.30.1")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "crds" / "velero-2.30.1"


def crd_schema(kind: str) -> dict[str, Any]:
    folder = SHARED if SHARED.is_dir() else CRDS
    if not folder.is_dir():
        pytest.skip(f"the pinned CRDs are not here ({folder})")
    crd = yaml.safe_load((folder / f"{kind.lower()}s.velero.io.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


TYPES = {"string": str, "boolean": bool, "integer": int, "object": dict, "array": list}


def undeclared(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """What the API server would prune or refuse: undeclared fields, wrong types, missing required fields."""
    problems = []
    kind = schema.get("type")
    if kind in TYPES and not isinstance(value, TYPES[kind]):
        return [f"{path or '.'}: {type(value).__name__}, not {kind}"]
    if isinstance(value, dict) and path != ".metadata":
        props = schema.get("properties")
        problems += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if props is not None and key in props:
                problems += undeclared(item, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += undeclared(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: not declared")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += undeclared(item, schema["items"], f"{path}[{i}]")
    return problems


def test_the_backup_and_restore_objects_are_valid_against_velero_s_crds() -> None:
    assert undeclared(backup_object("before-upgrade"), crd_schema("Backup")) == []
    assert undeclared(restore_object("r1", "before-upgrade"), crd_schema("Restore")) == []
    typo = backup_object("b")
    typo["spec"]["includeNamespaces"] = ["*"]          # a plausible typo: the API server would drop it
    assert undeclared(typo, crd_schema("Backup")) == [".spec.includeNamespaces: not declared"]
    assert backup_object("b")["metadata"]["namespace"] == VELERO_NS == "velero-system"


def declare(mock: km.KubernetesEmulator) -> None:
    for plural in ("backups", "restores"):
        mock.resources[f"velero.io/v1/{plural}"] = {}


def velero_sets(mock: km.KubernetesEmulator, plural: str, name: str, status: dict[str, Any], after: float) -> None:
    """Velero's controller: a moment after the object is made, it writes its status."""
    def later() -> None:
        mock.objects[f"velero.io/v1/{plural}", VELERO_NS, name].patch({"status": status})

    def made() -> None:
        asyncio.get_running_loop().call_later(after, later)

    mock["post", km.resource(f"velero.io/v1/{plural}")] >> made


@pytest.mark.asyncio
async def test_a_backup_is_created_through_the_api_and_waited_until_completed(kmock: km.KubernetesEmulator,
                                                                               tmp_path: Path) -> None:
    declare(kmock)
    velero_sets(kmock, "backups", "nightly", {"phase": "Completed", "progress": {"itemsBackedUp": 40,
                                                                               "totalItems": 40}}, 0.3)
    kube = Kube(write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")))
    phases: list[str] = []
    line = await run(velero_run, kube, "Backup", backup_object("nightly"), timeout=10, poll=0.05,
                     on_phase=phases.append)
    assert line == "Backup nightly: Completed, 40/40 items"
    assert phases == ["New", "Completed"]
    (made,) = list(kmock["post", km.resource("velero.io/v1/backups")])
    assert made.data["spec"]["storageLocation"] == "default"
    assert server_faults(kmock) == []


@pytest.mark.asyncio
async def test_a_failed_restore_is_reported_in_velero_s_words(kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    declare(kmock)
    velero_sets(kmock, "restores", "r1", {"phase": "FailedValidation",
                                          "validationErrors": ["backup \"nope\" not found"]}, 0.1)
    kube = Kube(write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")))
    with pytest.raises(VeleroFailed, match=r'Restore r1: FailedValidation, validation: backup "nope" not found'):
        await run(velero_run, kube, "Restore", restore_object("r1", "nope"), timeout=10, poll=0.05)
    velero_sets(kmock, "restores", "r2", {"phase": "PartiallyFailed", "errors": 2,
                                          "failureReason": "restic timed out"}, 0.1)
    with pytest.raises(VeleroFailed, match="r2: PartiallyFailed, 2 errors, failure: restic timed out"):
        await run(velero_run, kube, "Restore", restore_object("r2", "nightly"), timeout=10, poll=0.05)


@pytest.mark.asyncio
async def test_the_wait_for_velero_is_bounded(kmock: km.KubernetesEmulator, tmp_path: Path) -> None:
    declare(kmock)
    kube = Kube(write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")))
    started = time.monotonic()
    with pytest.raises(VeleroFailed, match=r"Backup slow: New; not finished after 0s"):
        await run(velero_run, kube, "Backup", backup_object("slow"), timeout=0.4, poll=0.05)
    assert time.monotonic() - started < 5


# --- restic ---------------------------------------------------------------------------------------------------


def test_restic_reads_its_credentials_from_the_env_file_on_the_host_never_from_argv() -> None:
    change = decide(Restore("node2", "/etc/hosts"), {"ready": out(), "here": out("aa\n"), "there": out("bb\n")})
    assert isinstance(change, Change)
    script = change.commands[0].script
    assert ". /etc/restic/restic.env" in script and "PASSWORD" not in script and "AWS_" not in script
    assert "restore latest --host node2 --target / --include /etc/hosts" in script
    for probe in [*Restore("node2", "/etc/a b").probes().values(), snapshots_probe("node2"), script]:
        assert subprocess.run(["sh", "-n", "-c", probe], capture_output=True).returncode == 0, probe


def test_a_file_that_matches_its_snapshot_is_left_and_a_missing_restic_is_a_skip() -> None:
    step = Restore("node2", "/etc/hosts", "0123abcd", "/srv/restored")
    assert step.dest == "/srv/restored/etc/hosts"
    assert decide(step, {"ready": out(), "here": out("aa\n"), "there": out("aa\n")}) == Ok(
        "/srv/restored/etc/hosts already matches snapshot 0123abcd of node2")
    assert is_skipped(decide(step, {"ready": out("", 1), "here": out("", 1), "there": out("", 1)}))
    assert is_skipped(decide(BackupNow(), {"ready": out("", 1)}))
    assert "systemctl start restic-backup.service" in decide(BackupNow(), {"ready": out()}).commands[0].script


@pytest.mark.parametrize(("args", "wrong"), [
    (("etc/hosts", "latest", "/"), "--path must be an absolute path"),
    (("/etc/hosts", "latest; rm -rf /", "/"), "--snapshot must be 'latest' or a snapshot id"),
    (("/etc/hosts", "latest", "restore"), "--target must be an absolute path"),
    (("/etc/a\nb", "latest", "/"), "--path must be an absolute path"),
])
def test_restore_arguments_are_checked(args: tuple[str, str, str], wrong: str) -> None:
    assert check_restore_args(*args).startswith(wrong)
    assert check_restore_args("/etc/hosts", "0123abcd", "/") == ""


def test_snapshots_are_read_from_restic_s_json() -> None:
    text = ('[{"time":"2026-11-29T03:00:01.5Z","hostname":"node2","paths":["/etc","/root"],"id":"0123456789abcdef",'
            '"short_id":"01234567"}]')
    assert parse_snapshots(text) == [{"id": "01234567", "time": "2026-11-29T03:00:01.5Z", "hostname": "node2",
                                      "paths": ["/etc", "/root"]}]
    assert parse_snapshots("null") == []
    assert "--host node2" in snapshots_probe("node2") and "--host" not in snapshots_probe("node2", all_hosts=True)
