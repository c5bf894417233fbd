"""The apps stage's bare-metal part: Minio on the `s3` host, restic on every Pi - decisions from facts.

And cluster.up's report of the stage: the hosts, then the controller's releases (an explicit skip here:
no kubeconfig, so no helm is downloaded either).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from stage_support import reference_data, write_inventory

from picluster import secrets
from picluster.inventory import Inventory
from picluster.remote import Change, Ok, ProbeOutput, StepError, changed_mark
from picluster.stages import STAGES, backup
from picluster.state.skip import SKIPPED
from picluster.versions import Binary, binary

if TYPE_CHECKING:
    from conftest import Sshd


@pytest.fixture
def inv(tmp_path: Path, made_pki: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))
    shutil.copytree(made_pki, tmp_path / "state" / "pki")
    return write_inventory(tmp_path, reference_data())


def names(steps: list) -> list[str]:  # type: ignore[type-arg]
    out = []
    for s in steps:
        inner = getattr(s, "steps", None) or [getattr(s, "step", s)]
        out += [i.name for i in inner]
    return out


def test_minio_goes_where_the_registry_points_s3_and_restic_everywhere(inv: Inventory) -> None:
    plan = backup.plan(inv)
    node1, node2, gateway = (names(list(plan(inv.hosts[h]))) for h in ("node1", "node2", "gateway"))
    assert "binary /usr/local/bin/minio" in node1 and "service minio" in node1
    assert "minio buckets, users and policies" in node1
    assert not any("minio" in n for n in node2 + gateway)
    for steps in (node1, node2, gateway):
        assert "binary /usr/local/bin/restic" in steps, steps
        assert "service restic-backup.timer" in steps
    assert "service restic-clean.timer" in gateway and "service restic-clean.timer" not in node2


def test_the_secret_files_hold_store_values_and_never_show_them(inv: Inventory) -> None:
    steps = list(backup.plan(inv)(inv.hosts["node1"]))
    files = {f.path: f for s in steps for f in getattr(s, "steps", []) if hasattr(f, "data")}
    env = files[backup.RESTIC_ENV]
    assert env.secret and env.mode == 0o600
    text = env.data.decode()
    assert "RESTIC_REPOSITORY='s3:https://s3.picluster.example.com:9091/restic'\n" in text
    assert f"RESTIC_PASSWORD='{secrets.read_secret('restic_repository_password')}'\n" in text
    assert files[backup.MINIO_CONF].secret and files[f"{backup.MINIO_SSL}/private.key"].secret
    decision = env.decide(env.parse({"stat": ProbeOutput("", 1), "content": ProbeOutput("", 1)}, frozenset()))
    assert isinstance(decision, Change)
    assert decision.diff == f"{backup.RESTIC_ENV}: content created (secret, not shown)"
    assert secrets.read_secret("restic_repository_password") not in json.dumps(
        [c.script for c in decision.commands])          # the content travels as stdin, not in the script
    users = files[backup.MINIO_USERS].data.decode()
    assert users.count("MINIO_USER_") == 3 and secrets.read_secret("minio_velero_password") in users


def test_backup_script_covers_the_admin_homes_and_initialises_once(inv: Inventory) -> None:
    script = backup.backup_script(inv)
    restic = "/usr/local/bin/restic --cacert /etc/restic/ca.pem"
    assert f"{restic} cat config >/dev/null 2>&1 || {restic} init" in script
    assert script.rstrip().endswith("/etc /root /home/picluster /home/oss")
    assert "--exclude /home/oss/.cache" in script


def binary_facts(version: str = "", reach: int = 0, arch: str = "arm64") -> dict[str, ProbeOutput]:
    return {"version": ProbeOutput(version), "arch": ProbeOutput(arch + "\n"), "reach": ProbeOutput("", reach)}


def test_the_minio_binary_is_a_skip_where_its_site_is_unreachable() -> None:
    minio = binary("minio")
    step = backup.VendorBinary(minio, backup.MINIO_BIN)
    unreachable = step.decide(step.parse(binary_facts(reach=28), frozenset()))
    assert isinstance(unreachable, Ok) and unreachable.reason.startswith(
        SKIPPED + "https://dl.min.io is unreachable from this host (curl exit 28)")
    with pytest.raises(StepError, match="curl is missing on this host"):
        step.decide(step.parse(binary_facts(reach=127), frozenset()))
    installed = step.decide(step.parse(binary_facts(f"minio version {minio.version} (commit-id=x)\n", reach=28),
                                       frozenset()))
    assert installed == Ok(f"/usr/local/bin/minio is minio {minio.version}")
    # no digest confirmed by two independent sources: refused, never checked against the site's own .sha256sum
    with pytest.raises(StepError, match=rf"no sha256 pinned for minio {minio.version} on arm64: add "
                                        r"binaries\.minio\.sha256\.arm64 .* two independent sources"):
        step.decide(step.parse(binary_facts(), frozenset()))


def test_mc_is_checked_against_its_pinned_digest_never_the_sites_checksum_file() -> None:
    mc = binary("mc")
    step = backup.VendorBinary(mc, "/usr/local/bin/mc")
    download = step.decide(step.parse(binary_facts(arch="amd64"), frozenset()))
    assert isinstance(download, Change)
    url = f"https://dl.min.io/client/mc/release/linux-amd64/archive/mc.{mc.version}"
    (command,) = download.commands
    assert f"-o \"$tmp/dl\" {url}\n" in command.script and ".sha256sum" not in command.script
    assert command.script.count("curl ") == 1                              # the build only, no checksum file
    assert "sum=f207b7fdf8ff126caf4c26603de752c918e3b8441040830dd62d749b22895d2d\n" in command.script
    assert "sha256sum -c" in command.script and "install -m 0755" in command.script
    assert download.sets == {changed_mark("/usr/local/bin/mc")}


def test_restic_is_the_pinned_github_build_checked_against_the_pinned_digest() -> None:
    restic = binary("restic")
    assert restic.version == "0.12.1"
    step = backup.VendorBinary(restic, backup.RESTIC_BIN, "version")
    assert step.probes()["version"] == "/usr/local/bin/restic version 2>/dev/null | head -n 3"
    newer = step.decide(step.parse(binary_facts("restic 0.12.10 compiled with go1.17 on linux/arm64\n"), frozenset()))
    assert isinstance(newer, Change), "0.12.10 is not 0.12.1"
    (command,) = newer.commands
    assert "https://github.com/restic/restic/releases/download/v0.12.1/restic_0.12.1_linux_arm64.bz2" in command.script
    assert f"sum={restic.sha256['arm64']}\n" in command.script and "bunzip2 -c" in command.script
    same = step.decide(step.parse(binary_facts("restic 0.12.1 compiled with go1.16.6 on linux/arm64\n"), frozenset()))
    assert same == Ok("/usr/local/bin/restic is restic 0.12.1")
    offline = step.decide(step.parse(binary_facts(reach=7), frozenset()))
    assert isinstance(offline, Ok) and offline.reason.startswith(SKIPPED + "https://github.com is unreachable")
    with pytest.raises(StepError, match=r"no sha256 pinned for restic 0\.12\.1 on riscv64: add "
                                        r"binaries\.restic\.sha256\.riscv64 to k8s/versions.yml"):
        step.decide(step.parse(binary_facts(arch="riscv64"), frozenset()))


def test_the_install_script_installs_only_a_build_whose_digest_matches(tmp_path: Path) -> None:
    """The generated script, run by a real shell on real files (file:// URLs): good build in, bad build out."""
    build = b"#!/bin/sh\necho 'restic 0.12.1 compiled with go1.16.6 on linux/arm64'\n"
    (tmp_path / "restic_0.12.1_linux_arm64.bz2").write_bytes(bz2.compress(build))
    digest = hashlib.sha256((tmp_path / "restic_0.12.1_linux_arm64.bz2").read_bytes()).hexdigest()
    url = f"file://{tmp_path}/restic_{{version}}_linux_{{arch}}.bz2"
    good = Binary("restic", "0.12.1", url, {"arm64": digest})
    bad = Binary("restic", "0.12.1", url, {"arm64": "0" * 64})
    target = tmp_path / "bin" / "restic"
    target.parent.mkdir()

    def install(b: Binary) -> subprocess.CompletedProcess[str]:
        step = backup.VendorBinary(b, str(target), "version")
        change = step.decide(step.parse(binary_facts(), frozenset()))
        assert isinstance(change, Change)
        return subprocess.run(["sh", "-c", change.commands[0].script], capture_output=True, text=True, timeout=60)

    refused = install(bad)
    assert refused.returncode != 0 and "FAILED" in refused.stderr + refused.stdout
    assert not target.exists()
    done = install(good)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == build and os.access(target, os.X_OK)
    assert subprocess.run([str(target), "version"], capture_output=True, text=True).stdout.split()[1] == "0.12.1"
    # a reinstall replaces the file by a rename (a new inode), never rewrites it in place: a binary that is
    # running (a backup at 03:00) cannot be opened for writing ("text file busy")
    before = target.stat().st_ino
    again = install(good)
    assert again.returncode == 0, again.stderr
    assert target.stat().st_ino != before and sorted(p.name for p in target.parent.iterdir()) == ["restic"]


def test_buckets_and_users_are_made_only_where_missing() -> None:
    step = backup.MinioProvision()
    listed = {"buckets": ProbeOutput('{"key":"restic/"}\n{"key":"k3s-velero/"}\n'),
              "users": ProbeOutput('{"accessKey":"restic","policyName":"restic-rw"}\n')}
    decision = step.decide(step.parse(listed, frozenset()))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines() == ["bucket k3s-longhorn: create",
                                          "user longhorn: create, policy k3s-longhorn-rw",
                                          "user velero: create, policy k3s-velero-rw"]
    script = decision.commands[0].script
    # the key comes from the 0600 file, and reaches mc on stdin, never in its argv
    add_velero = "printf '%s\\n' \"$MINIO_USER_VELERO\" | /usr/local/bin/mc --insecure admin user add local velero\n"
    assert add_velero in script
    done = {"buckets": ProbeOutput("".join(f'{{"key":"{b}/"}}\n' for b in backup.BUCKETS.values())),
            "users": ProbeOutput("".join(f'{{"accessKey":"{u}","policyName":"{b}-rw"}}\n'
                                         for u, b in backup.BUCKETS.items()))}
    assert isinstance(step.decide(step.parse(done, frozenset())), Ok)
    down = step.decide(step.parse({"buckets": ProbeOutput("connection refused", 1), "users": ProbeOutput("", 1)},
                                  frozenset()))
    assert isinstance(down, Ok) and down.reason.startswith(SKIPPED + "minio does not answer")


def test_velero_policy_is_limited_to_its_bucket() -> None:
    policy = json.loads(backup.bucket_policy("k3s-velero", velero=True))
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::k3s-velero/*"]
    assert "s3:ListBucket" in policy["Statement"][1]["Action"]


def test_the_apps_stage_runs_on_every_pi_then_the_controller(inv: Inventory) -> None:
    from picluster.remote.phases import ControllerPhase, HostPhase, RunOptions

    (apps,) = [s for s in STAGES if s.name == "apps"]
    hosts, releases = apps.phases(inv, RunOptions())
    assert isinstance(hosts, HostPhase) and isinstance(releases, ControllerPhase) and apps.gate == "apps"
    assert set(apps.roles) == {"gateway", "server", "agent"}
    (only_releases,) = apps.phases(inv, RunOptions(releases_only=True))
    assert isinstance(only_releases, ControllerPhase)


def test_servers_keep_local_path_non_default_across_k3s_restarts(inv: Inventory) -> None:
    from picluster.remote.phases import RunOptions
    from picluster.stages import k3s
    from picluster.state.skip import OnlyIf

    (apps,) = [s for s in STAGES if s.name == "apps"]
    planner = apps.phases(inv, RunOptions())[0].plan     # type: ignore[union-attr]
    (last,) = planner(inv.hosts["node1"])[-1:]
    assert isinstance(last, OnlyIf) and last.step.name == f"file {k3s.LOCAL_STORAGE}.skip"
    assert last.condition == f"test -f {k3s.LOCAL_STORAGE}"         # only once K3S has deployed it
    for agent in ("node2", "gateway"):
        assert not any(".skip" in n for n in names(list(planner(inv.hosts[agent]))))


def test_without_s3_in_the_registry_backups_are_an_explicit_skip(tmp_path: Path, inv: Inventory) -> None:
    data = reference_data()
    del data["cluster"]["services"]["s3"]
    other = write_inventory(tmp_path, data, "no-s3.yml")
    (step,) = backup.plan(other)(other.hosts["node1"])
    assert step.decide(None) == Ok(SKIPPED + "cluster.services has no 's3': no backup server configured")


def test_cluster_up_reports_the_releases_as_an_explicit_skip_without_helm(
        tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from test_up import lab_like_inventory

    from picluster.ops.summary import print_up
    from picluster.ops.up import up
    from picluster.stages import Stage

    path = [d for d in os.environ["PATH"].split(":") if d and not (Path(d) / "helm").exists()]
    monkeypatch.setenv("PATH", ":".join(path))                      # the facts: no helm on PATH,
    monkeypatch.setenv("PICLUSTER_TOOLS_DIR", str(tmp_path / "tools"))   # none in the tools folder,
    monkeypatch.delenv("PICLUSTER_HELM", raising=False)
    monkeypatch.setenv("PICLUSTER_KUBECONFIG", str(tmp_path / "no-kubeconfig"))   # and no kubeconfig
    from picluster.remote.phases import HostPhase, RunOptions

    (apps,) = [s for s in STAGES if s.name == "apps"]
    hosts_part = Stage("apps", ("server",), apps.summary,
                       lambda inv, options: [HostPhase("nothing", lambda host: []),
                                             apps.phases(inv, RunOptions(releases_only=True))[0]])
    inv = lab_like_inventory(tmp_path, sshd)

    run = up(inv, [hosts_part], RunOptions(limit=frozenset({"node1"}), dry_run=True))

    outcome = run.outcomes[1]
    assert not run.failed and outcome.hosts == ["node1", "controller"]
    assert outcome.result is not None
    controller = outcome.result.hosts[-1]
    assert controller.host == "controller" and controller.status == "ok"
    assert [s.name for s in controller.steps] == ["helm releases"]     # no kubeconfig: helm is not downloaded
    assert controller.steps[0].reason.startswith(f"skipped: no kubeconfig at {tmp_path / 'no-kubeconfig'}")
    assert not (tmp_path / "tools").exists()
    console = Console(record=True, width=200)
    print_up(run, console=console)
    text = console.export_text()
    assert "apps: skipped step on controller: helm releases: no kubeconfig at " in text
    assert "+1 skip" in text


def test_hosts_planned_in_parallel_share_one_ca_and_one_set_of_secrets(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))     # no CA yet: made by plan()
    inv = write_inventory(tmp_path, reference_data())
    planner = backup.plan(inv)
    with ThreadPoolExecutor(5) as pool:
        plans = list(pool.map(lambda h: list(planner(h)), inv.hosts.values()))
    contents = set()
    for steps in plans:
        files = {f.path: f for s in steps for f in getattr(s, "steps", []) if hasattr(f, "data")}
        contents.add((files[backup.RESTIC_CA].data, files[backup.RESTIC_ENV].data))
    assert len(contents) == 1


def test_a_dry_run_makes_no_secret_and_no_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PICLUSTER_STATE_DIR", str(tmp_path / "state"))     # no CA, no secret yet
    inv = write_inventory(tmp_path, reference_data())
    with secrets.dry_run():
        steps = list(backup.plan(inv)(inv.hosts["node1"]))
    assert not secrets.secrets_dir().exists() and not (tmp_path / "state").exists()
    files = {f.path: f for s in steps for f in getattr(s, "steps", []) if hasattr(f, "data")}
    assert files[backup.RESTIC_CA].data.decode() == secrets.NOT_MADE
    assert f"RESTIC_PASSWORD='{secrets.NOT_MADE}'\n" in files[backup.RESTIC_ENV].data.decode()
    backup.plan(inv)                                                   # a real run makes them, once
    assert secrets.read_secret("restic_repository_password") not in (None, secrets.NOT_MADE)
    assert (tmp_path / "state" / "pki" / "CA.pem").is_file()


def test_cluster_up_dry_run_plans_inside_a_dry_run_of_the_store(tmp_path: Path, sshd: Sshd,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from test_up import lab_like_inventory

    from picluster.ops.up import up
    from picluster.stages import Stage

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from picluster.remote.phases import HostPhase, RunOptions

    made: list[str] = []
    stage = Stage("apps", ("server",), "a stage whose planner needs a secret",
                  lambda inv, options: (made.append(secrets.ensure_secret("dry-run-probe")),
                                        [HostPhase("nothing", lambda host: [])])[1])
    inv = lab_like_inventory(tmp_path, sshd)
    up(inv, [stage], RunOptions(limit=frozenset({"node1"}), dry_run=True))
    assert made == [secrets.NOT_MADE] and secrets.read_secret("dry-run-probe") is None
    assert not secrets.is_dry_run()                                     # and it is over after the run


def test_the_units_run_without_a_home_and_skip_without_the_binary() -> None:
    service, timer = backup.unit_pair("backup", backup.RESTIC_BACKUP, "*-*-* 03:00:00", "backup of this host")
    lines = service.splitlines()
    assert f"ConditionFileIsExecutable={backup.RESTIC_BIN}" in lines       # no binary: a skip, not a failure
    assert "CacheDirectory=restic" in lines and "Environment=RESTIC_CACHE_DIR=/var/cache/restic" in lines
    assert f"ExecStart={backup.RESTIC_BACKUP}" in lines and "OnCalendar=*-*-* 03:00:00" in timer.splitlines()
