"""Side by side on one lab: picluster's os+gateway stages, the same steps as Ansible and as pyinfra.

    python benchmarks/os/run.py compare --inventory /tmp/lab-os/lab.yml \
        --ansible /tmp/ansible-venv/bin --pyinfra /tmp/pyinfra-venv/bin
    python benchmarks/os/run.py picluster|ansible|pyinfra --inventory ...   (one run on the lab as it is)

`compare` brings the lab up fresh for each tool's first full run (lab.down, lab.up), re-runs each on its
converged lab (idempotent, all three reporting 0 changes), counts SSH sessions per host the same way for
the three tools, and prints the figures beside the targets as ratios (issue 16): idempotent picluster
<= 0.33x pyinfra's; first run <= 0.9x pyinfra's and <= 0.6x Ansible's.
Every time is the whole process (start-up and imports included); picluster runs without its gates, like
the others. Ansible: ansible-core (its own venv), forks 5, pipelining on, builtin modules only. pyinfra:
3.x (its own venv), its CLI with --sudo, all hosts at once, builtin operations and facts only.
SSH sessions: picluster and pyinfra count paramiko's `Transport.open_session` (each exec or SFTP
channel) per peer; Ansible's are its `SSH: EXEC ssh|sftp|scp` lines of -vvv (one channel each).
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
TARGET_IDEMPOTENT_VS_PYINFRA = 0.33
TARGET_FIRST_VS_PYINFRA = 0.9
TARGET_FIRST_VS_ANSIBLE = 0.6
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
            os_stage.ISCSI_INITIATOR: os_stage.initiator_file(inv, host),
        }
        files.update({f"/usr/local/bin/{name}": (os_stage.PI_SCRIPTS / name).read_text(encoding="utf-8")
                      for name in os_stage.PI_HELPERS})
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
        m = re.match(r"^<([^>]+)> SSH: EXEC (?:ssh|sftp|scp) ", line)
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
            "changed": sum(r["changed"] for r in recap.values()),
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


def run_picluster_here(inv: Any, stages: tuple[str, ...] = ("os", "gateway")) -> dict[str, Any]:
    """Run the stages in this process (no gates, like the others); return wall time, changes, sessions."""
    from picluster.ops.up import hosts_for, run_stage_with_gate
    from picluster.remote.phases import RunOptions
    from picluster.stages import STAGES

    counts = count_sessions()
    address = {str(h.ssh.address): h.name for h in inv.hosts.values()}
    out: dict[str, Any] = {"tool": "picluster", "stages": {}}
    start = time.monotonic()
    for stage in [s for s in STAGES if s.name in stages]:
        before = collections.Counter(counts)
        outcome = run_stage_with_gate(inv, stage, hosts_for(stage, list(inv.hosts.values())), RunOptions(),
                                      gate=False)
        result = outcome.result
        assert result is not None
        out["stages"][stage.name] = {
            "wall": round(result.duration, 2), "changed": result.changed,
            "changed_steps": {h.host: [st.name for st in h.steps if st.status == "changed"] for h in result.hosts
                              if h.status == "changed"},
            "failures": [f"{h.host}: {h.status} {h.message or (h.failed_step.name if h.failed_step else '')}"
                         for h in result.failures],
            "sessions": {address.get(k, k): v - before.get(k, 0) for k, v in counts.items()
                         if v - before.get(k, 0)},
            # where a host's time went: each step (one round trip, or a batch's), the rest is connecting
            "per_host": {h.host: {"wall": round(h.duration, 2),
                                  "outside_steps": round(h.duration - sum(st.duration for st in h.steps), 2),
                                  "steps": {st.name: round(st.duration, 3) for st in h.steps}}
                         for h in result.hosts},
        }
    out["wall_in_process"] = round(time.monotonic() - start, 2)
    out["ssh_sessions"] = {address.get(k, k): v for k, v in counts.items()}
    return out


def run_picluster(inventory: str, stages: tuple[str, ...] = ("os", "gateway")) -> dict[str, Any]:
    """Run the stages in a process of their own; return its wall time (start-up included) and its figures."""
    with tempfile.NamedTemporaryFile(prefix="picluster-bench-", suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "picluster", "--inventory", inventory,
                           "--stages", ",".join(stages), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        print(f"picluster run exited {proc.returncode}:\n{proc.stderr[-3000:]}", file=sys.stderr)
    figures = json.loads(out.read_text()) if out.stat().st_size else {"tool": "picluster"}
    out.unlink(missing_ok=True)
    figures.update(wall=round(wall, 2), rc=proc.returncode)
    figures["changed"] = sum(s["changed"] for s in figures.get("stages", {}).values())
    return figures


def pyinfra_inventory(inv: Any, files: Path) -> str:
    """Return a pyinfra inventory (Python) for the picluster inventory's hosts, their data as in Ansible's."""
    from picluster.stages import gateway as gw
    from picluster.stages import os as os_stage

    hosts = []
    for h in inv.hosts.values():
        t = h.ssh
        data: dict[str, Any] = {
            "ssh_hostname": str(t.address), "ssh_port": t.port, "ssh_user": t.user,
            "role": h.role, "domain": inv.cluster.domain, "timezone": h.vars["timezone"],
            "packages": os_stage.packages(h), "files_dir": str(files), "sysctls": dict(os_stage.SYSCTLS),
            "fluentbit_url": gw.FLUENTBIT_URL, "fluentbit_key_url": gw.FLUENTBIT_KEY_URL,
            "fluentbit_host": gw.FLUENTBIT_URL.split("//", 1)[-1],
        }
        if t.key_file:
            data["ssh_key"] = str(t.key_file)
        if t.known_hosts:
            data.update(ssh_known_hosts_file=str(t.known_hosts), ssh_strict_host_key_checking="yes")
        if h.data_partition is not None:
            data["data_device"] = h.data_partition.device
        hosts.append((h.name, data))
    return f"lab = {hosts!r}\n"


def run_pyinfra(inv: Any, pyinfra_bin: Path) -> dict[str, Any]:
    """Run the deploy once with pyinfra's CLI; return wall time, changed operations and SSH sessions per host."""
    work = Path(tempfile.mkdtemp(prefix="picluster-bench-pyinfra-"))
    render_files(inv, work / "files")
    (work / "inventory.py").write_text(pyinfra_inventory(inv, work / "files"))
    out = work / "counted.json"
    start = time.monotonic()
    proc = subprocess.run([str(pyinfra_bin / "python"), str(HERE / "pyinfra_counted.py"), str(out), "--",
                           "-y", "--sudo", "--no-wait", str(work / "inventory.py"), str(HERE / "pyinfra_deploy.py")],
                          cwd=work, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - start
    counted = json.loads(out.read_text()) if out.is_file() else {}
    address = {str(h.ssh.address): h.name for h in inv.hosts.values()}
    if proc.returncode != 0 or counted.get("failed"):
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        print(f"pyinfra exited {proc.returncode}:\n{tail}\n{proc.stderr[-2000:]}", file=sys.stderr)
    changed = counted.get("changed", {})
    return {"tool": "pyinfra", "wall": round(wall, 2), "rc": proc.returncode,
            "changed": sum(len(v) for v in changed.values()), "changed_ops": changed,
            "failed_ops": counted.get("failed", {}),
            "ssh_sessions": {address.get(k, k): v for k, v in counted.get("sessions", {}).items()}}


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


def load_average() -> str:
    """The 1-minute load average now (the machine is shared)."""
    return f"{os.getloadavg()[0]:.2f}"


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def compare(inventory: str, ansible_bin: Path | None, pyinfra_bin: Path) -> dict[str, Any]:
    """Each tool's first run on a fresh lab, then its idempotent re-runs on the converged lab."""
    from picluster.inventory import load_inventory

    inv = load_inventory(inventory)
    figures: dict[str, Any] = {}

    def timed(key: str, run: Any) -> None:
        load = load_average()
        figures[key] = run()
        figures[key]["load"] = load
        print(f"{key}: {figures[key]['wall']} s, {figures[key].get('changed')} changed, load {load}",
              file=sys.stderr, flush=True)

    tools: list[tuple[str, Any]] = [("pyinfra", lambda: run_pyinfra(inv, pyinfra_bin)),
                                    ("picluster", lambda: run_picluster(inventory))]
    if ansible_bin is not None:
        tools.append(("ansible", lambda: run_ansible(inv, ansible_bin)))
    for name, run in tools:
        lab("down", inventory)
        lab("up", inventory)
        timed(f"{name}_first", run)
        timed(f"{name}_again", run)
        timed(f"{name}_again2", run)
    # every tool once more on the lab the last one converged, back to back (another tool's converged state
    # may differ in details, so these runs may change something: they are not the idempotent figures)
    for name, run in tools:
        timed(f"{name}_on_converged", run)
    lab("down", inventory)
    figures["summary"] = summarize(figures)
    return figures


def _changes(run: dict[str, Any]) -> int | None:
    if run.get("changed") is None and "recap" in run:
        return sum(r["changed"] for r in run["recap"].values())
    return run.get("changed")


def idempotent(figures: dict[str, Any], name: str) -> float | None:
    """The tool's fastest re-run on its own converged lab that changed nothing (None if none did)."""
    runs = [figures.get(f"{name}_{k}") for k in ("again", "again2")]
    walls = [r["wall"] for r in runs if r and _changes(r) == 0 and not r.get("rc")]
    return min(walls) if walls else None


def summarize(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures beside the targets, as ratios; each with the load average when it started."""
    tools = [t for t in ("picluster", "pyinfra", "ansible") if f"{t}_first" in figures]
    first = {t: figures[f"{t}_first"]["wall"] for t in tools}
    again = {t: idempotent(figures, t) for t in tools}
    summary: dict[str, Any] = {
        "first_run_s": first,
        "first_run_changes": {t: _changes(figures[f"{t}_first"]) for t in tools},
        "first_run_failed": {t: figures[f"{t}_first"].get("failed_ops") or figures[f"{t}_first"].get("rc") or None
                             for t in tools},
        "idempotent_s (fastest 0-change re-run)": again,
        "load_1min": {k: v["load"] for k, v in figures.items() if isinstance(v, dict) and "load" in v},
        "ssh_sessions_per_host_idempotent": {
            t: figures[f"{t}_again2"].get("ssh_sessions") or figures[f"{t}_again2"].get("ssh_execs") for t in tools},
    }
    if "pyinfra" in tools:
        p, y = again["picluster"], again["pyinfra"]
        summary["idempotent_vs_pyinfra"] = [_ratio(p, y) if p and y else None,
                                            f"target <= {TARGET_IDEMPOTENT_VS_PYINFRA}"]
        summary["first_vs_pyinfra"] = [_ratio(first["picluster"], first["pyinfra"]),
                                       f"target <= {TARGET_FIRST_VS_PYINFRA}"]
    if "ansible" in tools:
        summary["first_vs_ansible"] = [_ratio(first["picluster"], first["ansible"]),
                                       f"target <= {TARGET_FIRST_VS_ANSIBLE}"]
        p, a = again["picluster"], again["ansible"]
        summary["idempotent_vs_ansible"] = _ratio(p, a) if p and a else None
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compare", "picluster", "ansible", "pyinfra", "summarize"])
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--ansible", default="/tmp/ansible-venv/bin", help="directory of ansible-playbook")
    parser.add_argument("--no-ansible", action="store_true", help="compare picluster with pyinfra only")
    parser.add_argument("--pyinfra", default="/tmp/pyinfra-venv/bin", help="bin directory of pyinfra's venv")
    parser.add_argument("--stages", default="os,gateway", help="picluster mode: the stages to run")
    parser.add_argument("--output", help="also write the figures as JSON here")
    args = parser.parse_args()
    from picluster.inventory import load_inventory

    if args.mode == "summarize":  # again, from the JSON a compare wrote (--inventory names that file)
        figures = {"summary": summarize(json.loads(Path(args.inventory).read_text()))}
    elif args.mode == "compare":
        figures = compare(args.inventory, None if args.no_ansible else Path(args.ansible), Path(args.pyinfra))
    elif args.mode == "ansible":
        figures = run_ansible(load_inventory(args.inventory), Path(args.ansible))
    elif args.mode == "pyinfra":
        figures = run_pyinfra(load_inventory(args.inventory), Path(args.pyinfra))
    else:
        figures = run_picluster_here(load_inventory(args.inventory), tuple(args.stages.split(",")))
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    if args.mode != "picluster" or not args.output:
        print(json.dumps(figures.get("summary", figures), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
