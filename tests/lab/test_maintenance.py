"""Day-2 maintenance for real against the lab (marker `lab`; Linux, root): one lab for the module.

- `cluster.update`: the nodes' package sources are, for the test, only a small apt repository built here with
  dpkg-deb (packages at 1.0, then 2.0; one held; one whose 2.0 postinst asks for a reboot through
  /var/run/reboot-required) and served over HTTP on the lab's bridge. The dry run lists each host's upgrades and
  changes nothing; the run upgrades everything but the held package, reboots exactly the hosts that asked,
  the gateway alone first, then one node at a time; the os checks pass; a second run changes nothing.
- `k3s.stop` / `k3s.start`: no K3S in the lab: explicit skips naming why, the wait Ready a skip too.
- backups: `backup.now` with the lab's stand-ins (Debian's restic, the S3 double), a file deleted, then
  `backup.restore` brings it back byte for byte.
- `cluster.reset` and `node.remove`: their host parts for real (the uninstall script, the logs, /storage).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from lab_support import lab_inventory, ssh_run

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
INVOKE = str(Path(sys.executable).with_name("invoke"))
REPO_PORT = 8765
SOURCES_AWAY = "/var/tmp/picluster-test-sources"
#: The hosts whose 2.0 package asks for a reboot.
REBOOTERS = ("gateway", "node3")
#: The host the backup round trip runs on (Debian's restic stands in for the pinned build there).
BACKED_UP = "node2"


@pytest.fixture(scope="module")
def home() -> Path:
    """The secrets store the apps stage and the S3 double share: the default one, as in test_stage_apps."""
    from picluster import secrets

    return secrets.secrets_dir()


def invoke(home: Path, *args: str, timeout: float = 1200, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PICLUSTER_KUBECONFIG", None)
    return subprocess.run([INVOKE, "-r", str(REPO), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          input=stdin)


def task(home: Path, name: str, report: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = invoke(home, name, "--inventory", str(lab_inventory()), "--report", str(report), "-v", *extra)
    return proc, json.loads(report.read_text()) if report.exists() else {}


def said(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout[-5000:] + proc.stderr[-3000:]


def steps(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(h["host"], s) for st in data["stages"] for h in st["hosts"] for s in h["steps"]]


def changed(data: dict[str, Any]) -> list[str]:
    return [f"{host}/{s['name']}" for host, s in steps(data) if s["status"] == "changed"]


@pytest.fixture(scope="module")
def lab(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from picluster.lab.lab import Lab

    the_lab = Lab(str(lab_inventory()))
    the_lab.up()
    try:
        started = time.monotonic()
        proc = invoke(home, "cluster.up", "--only", "os,k3s,apps", "--inventory", str(lab_inventory()))
        assert proc.returncode == 0, said(proc)
        print(f"\nos, k3s and apps stages in {time.monotonic() - started:.1f}s")
        code, text = ssh_run(the_lab.host(BACKED_UP), "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                                                      "restic >/dev/null", timeout=300)
        assert code == 0, text
        yield the_lab
    finally:
        if not os.environ.get("PICLUSTER_LAB_KEEP"):
            the_lab.down()


# --- a small apt repository -------------------------------------------------------------------------------


def build_deb(out: Path, name: str, version: str, postinst: str = "") -> Path:
    root = out / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/picluster-test").mkdir(parents=True)
    (root / f"usr/share/picluster-test/{name}").write_text(f"{name} {version}\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: picluster tests <t@example.org>\n"
        f"Description: picluster update test package\n")
    if postinst:
        (root / "DEBIAN/postinst").write_text(f"#!/bin/sh\nset -e\n{postinst}\n")
        (root / "DEBIAN/postinst").chmod(0o755)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def publish(repo: Path, debs: list[Path]) -> None:
    """Write Packages and Release for a flat repository holding `debs`."""
    entries = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
        data = deb.read_bytes()
        entries.append(control.rstrip("\n") + f"\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
        (repo / deb.name).write_bytes(data)
    packages = "\n".join(entries).encode()
    (repo / "Packages").write_bytes(packages)
    (repo / "Release").write_text(f"Origin: picluster-test\nLabel: picluster-test\nDate: "
                                  f"{time.strftime('%a, %d %b %Y %H:%M:%S UTC', time.gmtime())}\nSHA256:\n"
                                  f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n")


REBOOT_POSTINST = ('if [ "$1" = configure ]; then touch /var/run/reboot-required; '
                   'echo picluster-reboot-demo >> /var/run/reboot-required.pkgs; fi')


@pytest.fixture(scope="module")
def apt_repo(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The repository served on the bridge at 1.0; the nodes' sources replaced by it; the 1.0 packages installed
    (picluster-held on hold, picluster-reboot-demo on the REBOOTERS)."""
    build, repo = tmp_path_factory.mktemp("debs"), tmp_path_factory.mktemp("repo")
    debs = {(n, v): build_deb(build, n, v, REBOOT_POSTINST if n == "picluster-reboot-demo" and v == "2.0" else "")
            for n in ("picluster-demo", "picluster-held", "picluster-reboot-demo") for v in ("1.0", "2.0")}
    publish(repo, [d for (n, v), d in debs.items() if v == "1.0"])
    address = str(lab.inv.cluster.controller)
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", address, "--directory", str(repo),
                               str(REPO_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    source = f"deb [trusted=yes] http://{address}:{REPO_PORT}/ ./"
    deadline = time.monotonic() + 15
    while True:     # listening before a node asks
        try:
            socket.create_connection((address, REPO_PORT), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "the repository's HTTP server did not start"
            time.sleep(0.1)

    def prepare(host: Any) -> tuple[int, str]:
        pkgs = "picluster-demo picluster-held" + (" picluster-reboot-demo" if host.name in REBOOTERS else "")
        return ssh_run(host, (
            f"sudo sh -ec 'mkdir -p {SOURCES_AWAY}; mv /etc/apt/sources.list /etc/apt/sources.list.d {SOURCES_AWAY}/ "
            f"2>/dev/null || true; mkdir -p /etc/apt/sources.list.d; echo \"{source}\" > /etc/apt/sources.list; "
            f"echo \"Acquire::http::Proxy::{address} \\\"DIRECT\\\";\" > /etc/apt/apt.conf.d/99picluster-test; "
            "apt-get -q update >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get -q -y install "
            f"{pkgs} >/dev/null; apt-mark hold picluster-held >/dev/null'"), timeout=300)

    try:
        with ThreadPoolExecutor(5) as pool:
            for host, (code, text) in zip(lab.hosts, pool.map(prepare, lab.hosts), strict=True):
                assert code == 0, (host.name, text)
        publish(repo, list(debs.values()))       # 2.0 is out
        yield repo
    finally:
        server.terminate()
        server.wait(10)
        for host in lab.hosts:
            ssh_run(host, f"sudo sh -c 'apt-mark unhold picluster-held; dpkg --purge picluster-demo picluster-held "
                          f"picluster-reboot-demo; rm -rf /etc/apt/sources.list /etc/apt/sources.list.d "
                          f"/etc/apt/apt.conf.d/99picluster-test; mv {SOURCES_AWAY}/* /etc/apt/; "
                          "rm -f /var/run/reboot-required*'")


def versions(host: Any) -> dict[str, str]:
    _, text = ssh_run(host, "dpkg-query -W -f '${Package} ${Version}\\n' 'picluster-*'")
    return dict(line.split() for line in text.splitlines() if line.strip())


def boot_id(host: Any) -> str:
    return ssh_run(host, "cat /proc/sys/kernel/random/boot_id")[1].strip()


def test_cluster_update_dry_run_then_one_at_a_time_then_nothing(lab: Any, apt_repo: Path, home: Path,
                                                                 tmp_path: Path) -> None:
    before = {h.name: boot_id(h) for h in lab.hosts}

    proc, dry = task(home, "cluster.update", tmp_path / "dry.json", "--dry-run")
    assert proc.returncode == 0, said(proc)
    plan = next(s for host, s in steps(dry) if host == "controller")
    for h in lab.hosts:
        line = next(x for x in plan["diff"].splitlines() if x.startswith(f"{h.name}: "))
        assert "~ picluster-demo 1.0 -> 2.0" in line and "picluster-held" not in line, line
        assert ("picluster-reboot-demo 1.0 -> 2.0" in line) == (h.name in REBOOTERS), line
    assert "order: gateway -> node1 -> node2 -> node3 -> node4" in plan["diff"], plan["diff"]
    assert all(versions(h)["picluster-demo"] == "1.0" for h in lab.hosts), "the dry run changed a host"

    started = time.monotonic()
    proc, data = task(home, "cluster.update", tmp_path / "run.json")
    took = time.monotonic() - started
    print(f"\nrolling update of the {len(lab.hosts)}-node lab: {took:.1f}s")
    assert proc.returncode == 0, said(proc)
    assert data["stages"][0]["gate"]["ok"], data["stages"][0]["gate"]
    for h in lab.hosts:
        got = versions(h)
        assert (got["picluster-demo"], got["picluster-held"]) == ("2.0", "1.0"), (h.name, got)
        assert (boot_id(h) != before[h.name]) == (h.name in REBOOTERS), f"{h.name}: rebooted only if it asked"
        assert ssh_run(h, "test -e /var/run/reboot-required")[0] == 1, h.name
    events = [(e["host"], e["what"]) for e in data["timeline"]]
    turns = [(host, what) for host, what in events if what in ("outage announced", "outage over", "upgrade",
                                                              "upgraded")]
    assert turns == [("gateway", "outage announced"), ("gateway", "outage over"),
                     *[(n, w) for n in ("node1", "node2", "node3", "node4") for w in ("upgrade", "upgraded")]], turns
    assert ("node1", "cordon skipped") in events      # no K3S in the lab: the API steps are named skips

    proc, again = task(home, "cluster.update", tmp_path / "again.json")
    assert proc.returncode == 0, said(proc)
    assert changed(again) == [], changed(again)


def test_k3s_stop_and_start_are_explicit_skips_without_k3s(lab: Any, home: Path, tmp_path: Path) -> None:
    for name in ("k3s.stop", "k3s.start"):
        proc, data = task(home, name, tmp_path / f"{name}.json")
        assert proc.returncode == 0, said(proc)
        found = steps(data)
        nodes = [(host, s["status"], s["reason"]) for host, s in found if host != "controller"]
        assert len(nodes) == 4 and all(st == "skipped" and "k3s is not installed" in why for _, st, why in nodes), nodes
        if name == "k3s.start":
            wait = [s for host, s in found if host == "controller"]
            assert [(s["name"], s["status"]) for s in wait] == [("nodes Ready", "skipped")], wait


def test_a_restic_backup_now_and_a_restore_bring_a_deleted_file_back_byte_for_byte(lab: Any, home: Path,
                                                                                  tmp_path: Path) -> None:
    from s3_double import serving

    from picluster.lab import network
    from picluster.stages import backup
    from picluster.stages.apps.engine import minio_pki

    s3, node = backup.minio_host(lab.inv), lab.host(BACKED_UP)
    server = minio_pki(lab.inv, create=False)
    assert s3 is not None and server is not None, "the apps stage made no Minio certificate"
    (tmp_path / "s3.pem").write_text(server.cert_pem)
    (tmp_path / "s3.key").write_text(server.key_pem)
    (tmp_path / "s3.key").chmod(0o600)
    name = f"s3.{lab.inv.cluster.domain}"
    victim = "/etc/picluster-restore-test.bin"
    with serving(network.netns_name(lab.bridge, s3.name), str(s3.ip), 9091, tmp_path / "s3.pem",
                 tmp_path / "s3.key", tmp_path / "s3.log", buckets=(backup.BUCKETS["restic"],)):
        try:
            code, text = ssh_run(node, f"sudo ln -sf /usr/bin/restic {backup.RESTIC_BIN} && echo '{s3.ip} {name}' | "
                                       f"sudo tee -a /etc/hosts >/dev/null && sudo head -c 65536 /dev/urandom | "
                                       f"sudo tee {victim} >/dev/null && sudo sha256sum {victim}")
            assert code == 0, text
            digest = text.split()[0]
            started = time.monotonic()
            proc, data = task(home, "backup.now", tmp_path / "now.json", "--limit", BACKED_UP)
            assert [(h, s["name"], s["status"]) for h, s in steps(data)] == [
                (BACKED_UP, "restic backup now", "changed")], said(proc)
            # the apps checks ran, and rightly flag the one thing that is a stand-in: Debian's restic is not the
            # pinned build (the task exits 1 for it); every other check of the host passed
            gate = data["stages"][0]["gate"]
            assert (proc.returncode, gate["failed"], gate["passed"] > 0) == (1, 1, True), gate
            assert "test_restic_is_the_pinned_build" in " ".join(gate["failures"]), gate
            assert ssh_run(node, f"sudo rm {victim}")[0] == 0

            proc, data = task(home, "backup.restore", tmp_path / "restore.json", BACKED_UP, "--path", victim,
                              "--no-checks")
            took = time.monotonic() - started
            print(f"\nrestore round trip (backup.now, delete, backup.restore): {took:.1f}s")
            assert proc.returncode == 0, said(proc)
            assert changed(data) == [f"{BACKED_UP}/restic restore {victim}"]
            code, text = ssh_run(node, f"sudo sha256sum {victim}")
            assert (code, text.split()[0]) == (0, digest), text

            proc, again = task(home, "backup.restore", tmp_path / "again.json", BACKED_UP, "--path", victim,
                               "--no-checks")
            assert proc.returncode == 0 and changed(again) == [], said(proc)
            proc = invoke(home, "backup.snapshots", BACKED_UP, "--json", "--inventory", str(lab_inventory()))
            assert proc.returncode == 0, said(proc)
            assert [s["hostname"] for s in json.loads(proc.stdout)] == [BACKED_UP]
            from picluster import secrets

            for secret in ("restic_repository_password", "minio_restic_password"):
                value = secrets.read_secret(secret)
                assert value and value not in proc.stdout + proc.stderr + json.dumps(data)
        finally:
            ssh_run(node, f"sudo rm -f {backup.RESTIC_BIN} {victim}; sudo sed -i '/ {name}$/d' /etc/hosts")


STAND_IN = "#!/bin/sh\nrm -f /usr/local/bin/k3s /usr/local/bin/k3s-killall.sh \"$0\"\ntouch /var/tmp/{0}-ran\n"


def plant(host: Any, uninstall: str, *, storage: bool = False) -> None:
    """K3S's files as an install leaves them: a binary, the uninstall script (a stand-in doing its file part),
    pod logs, fluent-bit's database and a position file; maybe data under /storage."""
    script = STAND_IN.format(Path(uninstall).name)
    encoded = base64.b64encode(script.encode()).decode()
    cmds = [f"echo {encoded} | base64 -d > {uninstall}", f"chmod 755 {uninstall}",
            "printf '#!/bin/sh\\n' > /usr/local/bin/k3s", "chmod 755 /usr/local/bin/k3s",
            "mkdir -p /var/log/pods/ns_pod_1/c /var/log/containers /var/log/fluentbit",
            "echo log > /var/log/pods/ns_pod_1/c/0.log", "echo log > /var/log/containers/pod.log",
            "echo db > /var/log/fluentbit/flb_kube.db", "echo 1 > /var/log/flb-kube.pos"]
    if storage:
        cmds += ["mkdir -p /storage/longhorn", "echo data > /storage/longhorn/replica.img"]
    code, text = ssh_run(host, "sudo sh -ec '" + "; ".join(c.replace("'", "'\\''") for c in cmds) + "'")
    assert code == 0, (host.name, text)


def left(host: Any) -> list[str]:
    _, text = ssh_run(host, "for p in /usr/local/bin/k3s /var/log/pods /var/log/containers /var/log/fluentbit "
                               "/var/log/flb-kube.pos /storage/longhorn; do [ -e $p ] && echo $p; done; true")
    return text.split()


def test_node_remove_uninstalls_k3s_and_cleans_the_host_then_nothing(lab: Any, home: Path, tmp_path: Path) -> None:
    node = lab.host("node4")
    plant(node, "/usr/local/bin/k3s-agent-uninstall.sh")
    proc, data = task(home, "node.remove", tmp_path / "remove.json", "node4")
    assert proc.returncode == 0, said(proc)
    found = {f"{h}/{s['name']}": s for h, s in steps(data)}
    assert found["controller/take node4 out of the cluster"]["status"] == "skipped"
    assert found["node4/uninstall k3s"]["diff"] == "run /usr/local/bin/k3s-agent-uninstall.sh"
    assert left(node) == [] and ssh_run(node, "test -e /var/tmp/k3s-agent-uninstall.sh-ran")[0] == 0
    assert data["stages"][0]["gate"]["ok"]
    assert "remove it from" in proc.stdout
    proc, again = task(home, "node.remove", tmp_path / "again.json", "node4")
    assert proc.returncode == 0 and changed(again) == [], said(proc)


def test_cluster_reset_asks_then_uninstalls_and_cleans_and_a_second_run_changes_nothing(
        lab: Any, home: Path, tmp_path: Path) -> None:
    server, agent = lab.host("node1"), lab.host("node2")
    stray = "10.250.0.99"
    plant(server, "/usr/local/bin/k3s-uninstall.sh")
    plant(agent, "/usr/local/bin/k3s-agent-uninstall.sh", storage=True)
    # a discovery record of a portal that is not the gateway's, made offline (where open-iscsi is installed)
    has_iscsi = ssh_run(agent, f"sudo iscsiadm -m discoverydb -t sendtargets -p {stray}:3260 -o new && "
                               "sudo iscsiadm -m discovery")[1].count(stray) > 0
    print(f"\niSCSI discovery record planted: {has_iscsi}")

    proc = invoke(home, "cluster.reset", "--inventory", str(lab_inventory()), "--wipe-storage", stdin="no\n")
    assert proc.returncode == 1 and "not confirmed; nothing was changed" in proc.stderr, said(proc)
    assert "node2 (agent): uninstall K3S" in proc.stdout and "DELETE EVERYTHING UNDER /storage" in proc.stdout
    assert len(left(agent)) == 6, "a refused reset changed a host"

    proc, data = task(home, "cluster.reset", tmp_path / "reset.json", "--yes", "--wipe-storage")
    assert proc.returncode == 0, said(proc)
    assert left(server) == [] and left(agent) == []
    assert ssh_run(agent, "test -e /var/tmp/k3s-agent-uninstall.sh-ran")[0] == 0
    if has_iscsi:
        assert stray not in ssh_run(agent, "sudo iscsiadm -m discovery")[1]
    assert data["stages"][0]["gate"]["ok"]
    proc, again = task(home, "cluster.reset", tmp_path / "again.json", "--yes", "--wipe-storage")
    assert proc.returncode == 0 and changed(again) == [], said(proc)
