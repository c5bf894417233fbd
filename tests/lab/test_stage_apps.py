"""The apps stage's host part for real against the lab (marker `lab`; Linux, root).

On the session's lab (conftest's `lab_session`, from $PICLUSTER_LAB_INVENTORY, default hosts/lab.yml):
`cluster.up --only os,apps` (the os stage first, a no-op when it ran already) writes restic's 0600 env file and
enables its timers on every node (the repository maintenance timer on the gateway only), with the secrets from
the local store the stage uses (`picluster.secrets`), none of which appears in the report or the output. The lab
has no internet: the pinned restic build (GitHub), Minio's binaries (dl.min.io), its service and its buckets
are explicit skips with the reason, a timer's run without restic is a systemd condition skip (not a failure),
and the controller's Helm releases are one skip naming the missing helm. The gate reports 0 failed; a second
run (`apps.apply`) reports 0 changes (and so runs no gate). With stand-ins for what cannot be downloaded
(Debian's restic for the pinned build, moto's S3 server with Minio's certificate for Minio: `s3_double`), the
stage's units really back up two hosts and the gateway's maintenance really checks and prunes the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lab_support import lab_inventory, ssh_run

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
SECRETS = ("minio_root_password", "restic_repository_password", "minio_restic_password",
           "minio_longhorn_password", "minio_velero_password")


def invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INVOKE, "-r", str(REPO), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def run(task: str, report: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = invoke(task, "--inventory", str(lab_inventory()), "--report", str(report), "-v", *extra)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def stage(data: dict[str, Any], name: str = "apps") -> dict[str, Any]:
    return next(s for s in data["stages"] if s["stage"] == name)


def steps(data: dict[str, Any], name: str = "apps") -> list[tuple[str, dict[str, Any]]]:
    return [(h["host"], s) for h in stage(data, name)["hosts"] for s in h["steps"]]


def secret_values() -> dict[str, str]:
    """The values the stage wrote, read from the same store and the same way it reads them."""
    from picluster import secrets

    values = {name: secrets.read_secret(name) for name in SECRETS}
    missing = [name for name, value in values.items() if not value]
    assert not missing, f"the stage did not make {missing} in {secrets.secrets_dir()}"
    return {name: value for name, value in values.items() if value}


def leaked(proc: subprocess.CompletedProcess[str], data: dict[str, Any]) -> list[str]:
    said = proc.stdout + proc.stderr + json.dumps(data)
    return [name for name, value in secret_values().items() if value in said]


@pytest.fixture(scope="module")
def lab(lab_session: Any) -> Any:
    lab_session.up()  # a no-op while it runs; brings it back if an earlier module took it down
    return lab_session


@pytest.fixture(scope="module")
def first(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                          dict[str, Any]]:
    proc, data = run("cluster.up", tmp_path_factory.mktemp("apps") / "first.json", "--only", "os,apps")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc, data


def test_the_gate_passes_with_0_failed(first: tuple[Any, dict[str, Any]]) -> None:
    _, data = first
    assert stage(data, "os")["gate"]["ok"], stage(data, "os")["gate"]
    gate = stage(data)["gate"]
    assert gate["ok"] and gate["failed"] == 0 and gate["passed"] > 0, gate


def test_restic_timers_run_and_skip_cleanly_without_the_binary(lab: Any, first: Any) -> None:
    from picluster.stages import backup
    from picluster.versions import binary

    _, data = first
    restic = binary("restic")
    for host in lab.hosts:
        step = next(s for h, s in steps(data) if h == host.name and s["name"] == f"binary {backup.RESTIC_BIN}")
        assert step["status"] == "skipped", step
        assert step["reason"].startswith("skipped: https://github.com is unreachable from this host (curl exit "), step
        assert step["reason"].endswith(f"{backup.RESTIC_BIN} {restic.version} not installed"), step
        timers = ["restic-backup.timer", *(["restic-clean.timer"] if host.role == "gateway" else [])]
        for timer in timers:
            code, text = ssh_run(host, f"systemctl is-enabled {timer}; systemctl is-active {timer}")
            assert text.split() == ["enabled", "active"], (host.name, timer, text)
        if host.role != "gateway":
            code, _ = ssh_run(host, f"test -e {backup.UNITS}/restic-clean.timer")
            assert code == 1, f"{host.name} has the gateway's repository maintenance timer"
    # what the timer does at 03:00, now: with no binary, systemd skips the run on its condition, no failure
    node = lab.hosts[-1]
    code, text = ssh_run(node, "sudo systemctl start restic-backup.service; "
                               "systemctl show -p ConditionResult -p Result restic-backup.service")
    assert code == 0 and sorted(text.split()) == ["ConditionResult=no", "Result=success"], text


def test_a_backup_and_the_repository_maintenance_run_for_real_against_an_s3_double(
        lab: Any, first: Any, tmp_path: Path) -> None:
    """The stage's env file, CA, scripts and units, run by systemd: Debian's restic stands in for the pinned
    GitHub build (unreachable here) and moto's S3 server, with Minio's own certificate, for Minio."""
    from s3_double import serving

    from picluster.lab import network
    from picluster.stages import backup
    from picluster.stages.apps.engine import minio_pki

    s3 = backup.minio_host(lab.inv)
    server = minio_pki(lab.inv, create=False)
    assert s3 is not None and server is not None, "the stage made no Minio certificate"
    (tmp_path / "s3.pem").write_text(server.cert_pem)
    (tmp_path / "s3.key").write_text(server.key_pem)
    (tmp_path / "s3.key").chmod(0o600)
    name = f"s3.{lab.inv.cluster.domain}"
    gateway = next(h for h in lab.hosts if h.role == "gateway")
    agent = next(h for h in lab.hosts if h.role == "agent")
    repo = (f"sudo sh -c 'set -a; . {backup.RESTIC_ENV}; set +a; "
            f"{backup.RESTIC_BIN} --cacert {backup.RESTIC_CA} snapshots --json'")
    with serving(network.netns_name(lab.bridge, s3.name), str(s3.ip), 9091, tmp_path / "s3.pem",
                 tmp_path / "s3.key", tmp_path / "s3.log", buckets=(backup.BUCKETS["restic"],)):
        try:
            for host in (gateway, agent):
                code, text = ssh_run(host, "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic "
                                           f">/dev/null && sudo ln -sf /usr/bin/restic {backup.RESTIC_BIN} && "
                                           f"echo '{s3.ip} {name}' | sudo tee -a /etc/hosts >/dev/null", timeout=300)
                assert code == 0, (host.name, text)
                code, text = ssh_run(host, "sudo systemctl start restic-backup.service; systemctl show -p Result "
                                           "-p ConditionResult restic-backup.service", timeout=300)
                if sorted(text.split()) != ["ConditionResult=yes", "Result=success"]:
                    _, journal = ssh_run(host, "sudo journalctl -u restic-backup.service -o cat | tail -n 20")
                    pytest.fail(f"{host.name}: restic-backup.service: {text}\n{journal}")
            code, text = ssh_run(agent, repo, timeout=120)
            assert code == 0, text
            snapshots = json.loads(text)
            assert {sn["hostname"] for sn in snapshots} == {gateway.name, agent.name}
            assert all("/etc" in sn["paths"] for sn in snapshots)
            code, text = ssh_run(gateway, "sudo systemctl start restic-clean.service; systemctl show -p Result "
                                           "restic-clean.service", timeout=300)
            assert text.split() == ["Result=success"], text
            for host, unit in ((agent, "restic-backup"), (gateway, "restic-clean")):
                code, text = ssh_run(host, f"sudo journalctl -u {unit}.service -o cat")
                assert "unable to open cache" not in text and "Fatal" not in text, text[-3000:]
            assert "no errors were found" in text, text[-3000:]
        finally:
            for host in (gateway, agent):    # the stand-ins go: the stage's own state is back as it was
                ssh_run(host, f"sudo rm -f {backup.RESTIC_BIN}; sudo sed -i '/ {name}$/d' /etc/hosts")


def test_the_secret_files_are_0600_and_hold_the_stores_values(lab: Any, first: Any) -> None:
    from picluster.stages import backup

    values = secret_values()
    env = backup.restic_env(lab.inv, values["restic_repository_password"], values["minio_restic_password"])
    for host in lab.hosts:
        code, text = ssh_run(host, f"sudo stat -c '%a %U %G' {backup.RESTIC_DIR} {backup.RESTIC_ENV}")
        assert (code, text.split()) == (0, ["700", "root", "root", "600", "root", "root"]), (host.name, text)
        code, text = ssh_run(host, f"sudo cat {backup.RESTIC_ENV}")
        assert (code, text) == (0, env), host.name
    s3 = backup.minio_host(lab.inv)
    assert s3 is not None
    code, text = ssh_run(s3, f"sudo stat -c '%a %U' {backup.MINIO_USERS} {backup.MINIO_SSL}/private.key")
    assert (code, text.split()) == (0, ["600", "root", "600", "minio"]), text


def test_no_secret_appears_in_the_report_or_the_output(lab: Any, first: Any, tmp_path: Path) -> None:
    from picluster.stages import backup

    proc, data = first
    assert leaked(proc, data) == []
    # a run that writes the env file again, with -v (diffs shown): still no secret value in what it says
    node = next(h for h in lab.hosts if h.role == "agent")
    code, text = ssh_run(node, f"sudo sed -i 's/^RESTIC_PASSWORD=.*/RESTIC_PASSWORD=stale/' {backup.RESTIC_ENV}")
    assert code == 0, text
    proc, data = run("apps.apply", tmp_path / "rewrite.json", "--limit", node.name)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert ("restic files", "changed") in {(s["name"], s["status"]) for _, s in steps(data)}
    assert leaked(proc, data) == []
    code, text = ssh_run(node, f"sudo stat -c '%a' {backup.RESTIC_ENV}")
    assert text.strip() == "600"


def test_minio_is_an_explicit_skip_without_its_download_site(lab: Any, first: Any) -> None:
    from picluster.stages import backup
    from picluster.versions import binary

    _, data = first
    s3 = backup.minio_host(lab.inv)
    assert s3 is not None
    on_s3 = {s["name"]: s for host, s in steps(data) if host == s3.name}
    for path, name in ((backup.MINIO_BIN, "minio"), (backup.MC_BIN, "mc")):
        s = on_s3[f"binary {path}"]
        assert s["status"] == "skipped", s
        assert s["reason"].startswith("skipped: https://dl.min.io is unreachable from this host (curl exit "), s
        assert s["reason"].endswith(f"{path} {binary(name).version} not installed"), s
    for name in ("service minio", "minio buckets, users and policies"):
        assert (on_s3[name]["status"], on_s3[name]["reason"]) == ("skipped", f"skipped: {backup.NO_MINIO}")
    elsewhere = [f"{host}/{s['name']}" for host, s in steps(data) if host != s3.name and "minio" in s["name"]]
    assert elsewhere == []


def test_the_controllers_helm_releases_are_a_skip_naming_the_missing_kubeconfig(first: Any) -> None:
    _, data = first
    row = [s for host, s in steps(data) if host == "controller"]
    assert [(s["name"], s["status"]) for s in row] == [("helm releases", "skipped")], row
    # the lab's k3s stage fetches no kubeconfig (no K3S here), and without one no helm is downloaded
    assert row[0]["reason"].startswith("skipped: no kubeconfig at "), row


def test_second_run_changes_nothing(lab: Any, first: Any, tmp_path: Path) -> None:
    proc, data = run("apps.apply", tmp_path / "second.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert [f"{host}/{s['name']}" for host, s in steps(data) if s["status"] == "changed"] == []
    assert leaked(proc, data) == []
