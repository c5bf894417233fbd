"""Side by side on one lab: picluster's os+gateway stages and the same steps as an Ansible playbook.

    python benchmarks/os/run.py compare --inventory /tmp/lab-os/lab.yml --ansible /tmp/ansible-venv/bin
    python benchmarks/os/run.py picluster|ansible --inventory ...   (one run on the lab as it is)

`compare` brings the lab up fresh for each tool's first full run (lab.down, lab.up), re-runs both on
the converged lab (idempotent), counts SSH sessions per host for a no-op `os` stage, and prints the
figures beside the targets: idempotent picluster ≤ 1/3 of ansible, first run no slower, ≤ 15 round trips.
Ansible: ansible-core (its own venv), forks 5, pipelining on, builtin modules only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGET_IDEMPOTENT_RATIO = 1 / 3
TARGET_ROUND_TRIPS = 15


def render_files(inv: Any, dest: Path) -> None:
    """Write, per host, the files picluster renders (both container variants where they differ)."""
    from picluster.stages import gateway as gw
    from picluster.stages import os as os_stage
    from picluster.stages.templates import render

    for host in inv.hosts.values():
        root = dest / host.name
        files = {
            os_stage.CHRONY_CONF: os_stage.chrony_conf(inv, host),
            "/etc/default/chrony.container": os_stage.chrony_default("systemd-nspawn"),
            "/etc/default/chrony.host": os_stage.chrony_default(""),
            os_stage.CHRONY_DROPIN + ".container": os_stage.chrony_dropin("systemd-nspawn"),
            os_stage.CHRONY_DROPIN + ".host": os_stage.chrony_dropin(""),
            os_stage.MULTIPATH_CONF: render("multipath.conf.j2"),
            os_stage.LOGIND_DROPIN: os_stage.logind_dropin(host),
            "/etc/ssh/sshd_config.d/01-picluster-hardening.conf": os_stage.sshd_dropin(inv),
        }
        if host.role == "gateway":
            files.update({
                gw.DNSMASQ_CONF: gw.dnsmasq_conf(inv, host),
                "/etc/nftables.conf": gw.nftables_conf(inv, host),
                gw.RESOLVED_DROPIN: gw.resolved_dropin(inv, host),
            })
        for path, text in files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")


def ansible_inventory(inv: Any, files: Path) -> dict[str, Any]:
    """Return the Ansible inventory (YAML) for the picluster inventory's hosts."""
    from picluster.stages import os as os_stage

    hosts: dict[str, Any] = {}
    for h in inv.hosts.values():
        t = h.ssh
        entry: dict[str, Any] = {
            "ansible_host": t.address, "ansible_port": t.port, "ansible_user": t.user,
            "packages": os_stage.packages(h), "timezone": h.vars["timezone"],
        }
        if t.key_file:
            entry["ansible_ssh_private_key_file"] = str(t.key_file)
        if t.known_hosts:
            entry["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={t.known_hosts} -o StrictHostKeyChecking=yes"
        if h.data_partition is not None:
            entry["data_device"] = h.data_partition.device
        hosts[h.name] = entry
    return {"all": {
        "hosts": hosts,
        "vars": {"domain": inv.cluster.domain, "files_dir": str(files), "sysctls": dict(os_stage.SYSCTLS)},
        "children": {"gateway": {"hosts": {h.name: {} for h in inv.hosts.values() if h.role == "gateway"}}},
    }}


def run_ansible(inv: Any, ansible_bin: Path) -> dict[str, Any]:
    """Run the playbook once; return wall time, changed tasks and SSH executions per host."""
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-ansible-"))
    render_files(inv, work / "files")
    (work / "inventory.yml").write_text(yaml.safe_dump(ansible_inventory(inv, work / "files")))
    (work / "ansible.cfg").write_text(
        "[defaults]\nforks = 5\nhost_key_checking = True\nstdout_callback = default\n"
        "[ssh_connection]\npipelining = True\nssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
        f"control_path_dir = {work}/cp\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(work / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    start = time.monotonic()
    proc = subprocess.run([str(ansible_bin / "ansible-playbook"), "-vvv", "-i", str(work / "inventory.yml"),
                           str(HERE / "playbook.yml")], cwd=work, env=env, capture_output=True, text=True,
                          timeout=3600)
    wall = time.monotonic() - start
    execs: collections.Counter[str] = collections.Counter()
    address = {h.ssh.address: h.name for h in inv.hosts.values()}
    for line in proc.stdout.splitlines():
        m = re.match(r"^<([^>]+)> SSH: EXEC ssh ", line)
        if m and m.group(1) in address:
            execs[address[m.group(1)]] += 1
    block = re.compile(r"^(?:TASK|RUNNING HANDLER) \[([^\]]+)\].*?(?=^TASK |^RUNNING HANDLER |\Z)",
                       re.MULTILINE | re.DOTALL)
    changed_tasks = sorted({m.group(1) for m in block.finditer(proc.stdout)
                            if re.search(r"^changed: ", m.group(0), re.MULTILINE)})
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
             for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                                  proc.stdout, re.MULTILINE)}
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        print(f"ansible-playbook exited {proc.returncode}:\n{tail}\n{proc.stderr[-2000:]}", file=sys.stderr)
    return {"tool": "ansible", "wall": round(wall, 2), "rc": proc.returncode, "recap": recap,
            "ssh_execs": dict(execs), "changed_tasks": changed_tasks}


def count_sessions() -> collections.Counter[str]:
    """Count SSH exec sessions per peer address from now on (patches paramiko's Transport)."""
    import paramiko

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    original = paramiko.Transport.open_session

    def counted(self: paramiko.Transport, *args: Any, **kwargs: Any) -> Any:
        with lock:
            counts[str(self.getpeername()[0])] += 1
        return original(self, *args, **kwargs)

    paramiko.Transport.open_session = counted  # type: ignore[method-assign]
    return counts


def run_picluster(inv: Any, stages: tuple[str, ...] = ("os", "gateway")) -> dict[str, Any]:
    """Run the stages in this process (no gates, like the playbook); return wall time, changes, sessions."""
    from picluster.remote import run_stage
    from picluster.stages import STAGES

    counts = count_sessions()
    address = {h.ssh.address: h.name for h in inv.hosts.values()}
    out: dict[str, Any] = {"tool": "picluster", "stages": {}}
    start = time.monotonic()
    for stage in [s for s in STAGES if s.name in stages]:
        assert stage.plan is not None
        hosts = [h for h in inv.hosts.values() if h.role in stage.roles]
        before = collections.Counter(counts)
        result = run_stage(stage.name, hosts, stage.plan(inv), check=False)
        sessions = {address.get(k, k): v - before.get(k, 0) for k, v in counts.items()}
        out["stages"][stage.name] = {
            "wall": round(result.duration, 2), "changed": result.changed,
            "failures": [f"{h.host}: {h.status} {h.message or (h.failed_step.name if h.failed_step else '')}"
                         for h in result.failures],
            "sessions": sessions,
        }
    out["wall"] = round(time.monotonic() - start, 2)
    return out


def lab(action: str, inventory: str) -> float:
    """Bring the lab up (with the gateway's WAN link) or down; return the seconds it took."""
    from picluster.lab.lab import Lab

    start = time.monotonic()
    the_lab = Lab(inventory)
    if action == "up":
        the_lab.up()
    else:
        the_lab.down()
    return time.monotonic() - start


def compare(inventory: str, ansible_bin: Path) -> dict[str, Any]:
    """Both tools, first run on a fresh lab each, then idempotent re-runs on the converged lab."""
    from picluster.inventory import load_inventory

    inv = load_inventory(inventory)
    figures: dict[str, Any] = {}
    lab("down", inventory)
    lab("up", inventory)
    figures["ansible_first"] = run_ansible(inv, ansible_bin)
    figures["ansible_again"] = run_ansible(inv, ansible_bin)
    lab("down", inventory)
    lab("up", inventory)
    figures["picluster_first"] = run_picluster(inv)
    figures["picluster_again"] = run_picluster(inv)
    figures["ansible_on_converged"] = run_ansible(inv, ansible_bin)
    figures["picluster_noop_os"] = run_picluster(inv, ("os",))
    a_again, p_again = figures["ansible_again"]["wall"], figures["picluster_again"]["wall"]
    sessions = figures["picluster_noop_os"]["stages"]["os"]["sessions"]
    figures["summary"] = {
        "first_run_s": {"picluster": figures["picluster_first"]["wall"], "ansible": figures["ansible_first"]["wall"]},
        "first_run_ratio": round(figures["picluster_first"]["wall"] / figures["ansible_first"]["wall"], 2),
        "idempotent_s": {"picluster": p_again, "ansible": a_again},
        "idempotent_ratio": round(p_again / a_again, 2),
        "idempotent_target": f"<= {TARGET_IDEMPOTENT_RATIO:.2f}",
        "noop_os_round_trips_per_host": sessions,
        "round_trip_target": f"<= {TARGET_ROUND_TRIPS}",
        "ansible_ssh_execs_per_host_idempotent": figures["ansible_again"]["ssh_execs"],
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compare", "picluster", "ansible"])
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--ansible", default="/tmp/ansible-venv/bin", help="directory of ansible-playbook")
    parser.add_argument("--output", help="also write the figures as JSON here")
    args = parser.parse_args()
    from picluster.inventory import load_inventory

    if args.mode == "compare":
        figures = compare(args.inventory, Path(args.ansible))
    elif args.mode == "ansible":
        figures = run_ansible(load_inventory(args.inventory), Path(args.ansible))
    else:
        figures = run_picluster(load_inventory(args.inventory))
    text = json.dumps(figures.get("summary", figures), indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
