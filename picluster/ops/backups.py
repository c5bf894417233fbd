"""Backups on demand and their restores: restic on the hosts, Velero for the cluster.

restic (the apps stage installs it, with its repository and credentials in the host's 0600 env file): a backup
now is the host's own `restic-backup.service` run at once; the snapshots and a restore run restic on the host
with that env file sourced inside the remote shell, so no credential is ever in an argument list, a log or the
output. A restore of a file that already matches the snapshot changes nothing.

Velero: `backup.cluster NAME` and `restore.cluster NAME` create a Backup or a Restore object through the API
(the official client), wait (bounded) for Velero to finish it, and report a failure in Velero's own words
(its phase, failureReason, validationErrors, and the error and warning counts).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.stages.backup import RESTIC_BIN, RESTIC_CA, RESTIC_ENV
from picluster.state._fs import q
from picluster.state.skip import skipped

#: restic with the host's repository and credentials, read from its 0600 env file inside the remote shell.
RESTIC = f"set -a; . {RESTIC_ENV}; set +a; RESTIC_CACHE_DIR=/var/cache/restic {RESTIC_BIN} --cacert {RESTIC_CA}"
READY = f"test -x {RESTIC_BIN} && test -f {RESTIC_ENV}"
NO_RESTIC = (f"restic is not set up on this host ({RESTIC_BIN} or {RESTIC_ENV} is missing: the apps stage "
             "installs them; the pinned build's download may have been skipped)")
SNAPSHOT_ID = re.compile(r"^(latest|[0-9a-f]{8,64})$")


def check_restore_args(path: str, snapshot: str, target: str) -> str:
    """"" when the restore's arguments are usable; else one line saying what is wrong."""
    for name, value in (("--path", path), ("--target", target)):
        if not value.startswith("/") or any(c in value for c in "\n\r\0"):
            return f"{name} must be an absolute path on the host, not {value!r}"
    if not SNAPSHOT_ID.match(snapshot):
        return f"--snapshot must be 'latest' or a snapshot id (8 to 64 hex digits), not {snapshot!r}"
    return ""


class BackupNow:
    """Run the host's restic backup now (its systemd service, as the daily timer does)."""

    name = "restic backup now"

    def probes(self) -> Mapping[str, str]:
        """Is restic set up here?"""
        return {"ready": READY}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> bool:
        """Type the output."""
        return outputs["ready"].ok

    def decide(self, facts: bool) -> Decision:
        """A backup is always something to do where restic is set up."""
        if not facts:
            return skipped(NO_RESTIC)
        return Change("restic-backup.service: a new snapshot of /etc, /root and the admins' homes", [Command(
            "systemctl start restic-backup.service || { journalctl -u restic-backup.service -n 20 --no-pager "
            "-o cat >&2; exit 1; }")])


@dataclass(frozen=True)
class RestoreFacts:
    """Whether restic is set up, and the file's sha256 on the host and in the snapshot ("" when unknown)."""

    ready: bool
    here: str
    there: str


class Restore:
    """Restore `path` from a snapshot of this host (its latest by default) to `target` (/: where it was)."""

    def __init__(self, host: str, path: str, snapshot: str = "latest", target: str = "/") -> None:
        self.host, self.path, self.snapshot, self.target = host, path, snapshot, target

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"restic restore {self.path}"

    @property
    def dest(self) -> str:
        """Where the file lands."""
        return self.path if self.target == "/" else self.target.rstrip("/") + self.path

    def probes(self) -> Mapping[str, str]:
        """The file's digest here and in the snapshot (a directory or a missing file has none)."""
        snap = f"{q(self.snapshot)} --host {q(self.host)}" if self.snapshot == "latest" else q(self.snapshot)
        return {"ready": READY,
                "here": f"test -f {q(self.dest)} && sha256sum < {q(self.dest)} | cut -d' ' -f1",
                "there": f"{READY} || exit 1; t=$(mktemp) || exit 1; trap 'rm -f \"$t\"' EXIT; "
                         f"sh -c {q(f'{RESTIC} dump {snap} {q(self.path)}')} >\"$t\" 2>/dev/null || exit 1; "
                         "sha256sum < \"$t\" | cut -d' ' -f1"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RestoreFacts:
        """Type the outputs."""
        here = outputs["here"].stdout.strip() if outputs["here"].ok else ""
        there = outputs["there"].stdout.strip() if outputs["there"].ok else ""
        return RestoreFacts(outputs["ready"].ok, here, there)

    def decide(self, facts: RestoreFacts) -> Decision:
        """Nothing when the file already matches the snapshot; else the restore."""
        if not facts.ready:
            return skipped(NO_RESTIC)
        if facts.here and facts.here == facts.there:
            return Ok(f"{self.dest} already matches snapshot {self.snapshot} of {self.host}")
        host = f" --host {q(self.host)}" if self.snapshot == "latest" else ""
        restore = f"{RESTIC} restore {q(self.snapshot)}{host} --target {q(self.target)} --include {q(self.path)}"
        return Change(f"restore {self.path} from snapshot {self.snapshot} of {self.host} to {self.dest}",
                      [Command(f"sh -c {q(restore)}")])


def parse_snapshots(text: str) -> list[dict[str, Any]]:
    """`restic snapshots --json` as a list of {id, time, hostname, paths}; StepError when unreadable."""
    import json

    try:
        data = json.loads(text or "[]")
    except ValueError as err:
        raise StepError(f"restic's snapshot list is not JSON: {err}") from None
    return [{"id": s.get("short_id") or s.get("id", "")[:8], "time": s.get("time", ""),
             "hostname": s.get("hostname", ""), "paths": s.get("paths", [])} for s in data or []]


def snapshots_probe(host: str, all_hosts: bool = False) -> str:
    """The probe that lists a host's snapshots (the repository is shared: filtered by host unless asked)."""
    only = "" if all_hosts else f" --host {q(host)}"
    return f"{READY} || exit 3; sh -c {q(f'{RESTIC} snapshots --json{only}')}"


# --- Velero ------------------------------------------------------------------------------------------------

VELERO_NS = "velero-system"
GROUP, VERSION = "velero.io", "v1"
DONE_PHASES = {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}
WAIT_S = 1800.0
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def backup_object(name: str) -> dict[str, Any]:
    """A full Backup, as the reference's daily Schedule makes them (all namespaces, cluster resources, 30 days)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Backup",
            "metadata": {"name": name, "namespace": VELERO_NS, "labels": {"type": "full", "by": "picluster"}},
            "spec": {"includedNamespaces": ["*"], "includedResources": ["*"], "includeClusterResources": True,
                     "storageLocation": "default", "ttl": "720h0m0s"}}


def restore_object(name: str, backup: str) -> dict[str, Any]:
    """A Restore of every namespace of the Backup `backup`, its volumes included."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Restore",
            "metadata": {"name": name, "namespace": VELERO_NS, "labels": {"by": "picluster"}},
            "spec": {"backupName": backup, "includedNamespaces": ["*"], "restorePVs": True}}


class VeleroFailed(Exception):
    """Velero finished the object without success, or did not finish in time; the message has its words."""


def velero_summary(kind: str, obj: Mapping[str, Any]) -> str:
    """One line from an object's status: its phase, items, errors, warnings, and Velero's reasons."""
    status = obj.get("status") or {}
    parts = [f"{kind} {obj['metadata']['name']}: {status.get('phase') or 'New'}"]
    progress = status.get("progress") or {}
    if progress:
        parts.append(f"{progress.get('itemsBackedUp', progress.get('itemsRestored', 0))}/"
                     f"{progress.get('totalItems', 0)} items")
    for key in ("errors", "warnings"):
        if status.get(key):
            parts.append(f"{status[key]} {key}")
    if status.get("failureReason"):
        parts.append(f"failure: {status['failureReason']}")
    if status.get("validationErrors"):
        parts.append("validation: " + "; ".join(status["validationErrors"]))
    return ", ".join(parts)


def velero_run(kube: Any, kind: str, body: dict[str, Any], *, timeout: float = WAIT_S, poll: float = 2.0,
               on_phase: Any = None) -> str:
    """Create `body` (a Backup or Restore; an existing one of that name is waited for, not made again), wait for
    a final phase (bounded), and return its summary; raise VeleroFailed with Velero's words otherwise."""
    from kubernetes.client import CustomObjectsApi

    from picluster.kube.client import KubeError, is_api_error, status_message

    plural = kind.lower() + "s"
    name = body["metadata"]["name"]
    with kube.api() as client:
        api = CustomObjectsApi(client)
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, VELERO_NS, plural, body)
        except Exception as err:
            if not is_api_error(err, 409):
                raise KubeError(f"cannot create the {kind} {name}: {status_message(err)}") from None
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            try:
                obj = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, VELERO_NS, plural, name))
            except Exception as err:
                raise KubeError(f"cannot read the {kind} {name}: {status_message(err)}") from None
            phase = (obj.get("status") or {}).get("phase") or "New"
            if phase != seen and on_phase is not None:
                on_phase(phase)
            seen = phase
            if phase in DONE_PHASES:
                line = velero_summary(kind, obj)
                if phase != "Completed":
                    raise VeleroFailed(line)
                return line
            if time.monotonic() >= deadline:
                raise VeleroFailed(f"{velero_summary(kind, obj)}; not finished after {timeout:.0f}s "
                                   f"(see `velero {kind.lower()} describe {name}`)")
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
