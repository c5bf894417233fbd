"""Supervise one lab node: mount its overlay root, run systemd-nspawn, give reboot and poweroff meaning.

Started detached by the lab as
    unshare --mount --propagation private -- python -m picluster.lab.supervisor CONFIG.json
so the node's overlay mount lives in a private mount namespace and disappears with this process,
even after a crash. `systemctl reboot` in the node ends nspawn with exit code 133: we start it again.
`systemctl poweroff` ends it with 0: we stop. SIGTERM (lab.down) shuts the node down cleanly, and
kills it if it does not stop within the configured grace.

Only the standard library (and the stdlib-only lab.common) is imported here: one of these runs per node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from picluster.lab.common import write_json

REBOOT_EXIT = 133
MAX_REBOOTS = 5          # within REBOOT_WINDOW seconds: a boot loop, stop instead
REBOOT_WINDOW = 60.0


def nspawn_argv(cfg: dict[str, Any]) -> list[str]:
    return [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
        f"--directory={cfg['merged']}", f"--machine={cfg['machine']}",
        f"--network-namespace-path={cfg['netns_path']}",
        # The namespace is the node's own: let its systemd-networkd configure eth0 from netplan.
        "--capability=CAP_NET_ADMIN",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only",
    ]


CGROUP_ROOT = Path("/sys/fs/cgroup")
# Hierarchies a node gets a cgroup of its own in: systemd's (so the node's systemd owns a subtree
# instead of sharing one with the other nodes) and memory (so a node's memory can be read).
_CGROUP_MOUNTS = {"name=systemd": "systemd", "": "unified", "memory": "memory", "pids": "pids"}


def cgroup_dirs(name: str) -> list[Path]:
    """Where this process's per-node cgroups go: <its cgroup>/<name> in each hierarchy we use."""
    dirs = []
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        _, controllers, path = line.split(":", 2)
        mount = _CGROUP_MOUNTS.get(controllers)
        if mount is None:
            continue
        if controllers == "" and not (CGROUP_ROOT / "unified").is_dir():
            mount = ""  # pure cgroup v2: the hierarchy is mounted at the root
        base = CGROUP_ROOT / mount if mount else CGROUP_ROOT
        if base.is_dir():
            dirs.append(base / path.lstrip("/") / name)
    return dirs


def enter_cgroups(name: str) -> list[Path]:
    """Move this process (and so the node it starts) into a cgroup of its own per hierarchy.

    Without this every node, started from one supervisor cgroup, would share it with the others, and
    their systemds would race creating and removing the same sub-cgroups (units then fail with
    219/CGROUP).
    """
    entered = []
    for d in cgroup_dirs(name):
        try:
            d.mkdir(exist_ok=True)
            (d / "cgroup.procs").write_text(str(os.getpid()), encoding="utf-8")
            entered.append(d)
        except OSError:
            continue
    return entered


def rmdir_tree(d: Path) -> bool:
    """Remove an (empty of processes) cgroup and the ones below it, deepest first; True when gone."""
    if not d.is_dir():
        return True
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        return False
    return True


def remove_cgroups(dirs: list[Path]) -> None:
    """Leave our cgroups for their parents and remove them."""
    for d in dirs:
        try:
            (d.parent / "cgroup.procs").write_text(str(os.getpid()), encoding="utf-8")
        except OSError:
            pass
        rmdir_tree(d)


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    state_path = Path(cfg["state"])
    stop_grace = float(cfg.get("stop_grace", 8))
    state: dict[str, Any] = {"name": cfg["name"], "supervisor_pid": os.getpid(), "nspawn_pid": None,
                             "state": "starting", "started": None, "boots": 0, "last_exit": None,
                             "reason": None}
    child: subprocess.Popen[bytes] | None = None
    stopping = {"at": None}

    def on_term(signum: int, _frame: object) -> None:
        if stopping["at"] is None:
            stopping["at"] = time.monotonic()  # type: ignore[assignment]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # nspawn asks the node's systemd to shut down cleanly

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    cgroups = enter_cgroups(cfg["machine"])
    state["cgroups"] = [str(d) for d in cgroups]  # for lab.down, should we be killed
    merged = cfg["merged"]
    options = f"lowerdir={cfg['lower']},upperdir={cfg['upper']},workdir={cfg['work']}"
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        state.update(state="stopped", reason=f"overlay mount failed: {mounted.stderr.strip()}")
        write_json(state_path, state)
        return 1

    reboots: list[float] = []
    console = open(cfg["console"], "ab")
    try:
        while stopping["at"] is None:
            child = subprocess.Popen(nspawn_argv(cfg), stdin=subprocess.DEVNULL, stdout=console,
                                     stderr=subprocess.STDOUT, cwd="/")
            state.update(state="running", nspawn_pid=child.pid, started=time.time(),
                         boots=state["boots"] + 1, reason=None)
            write_json(state_path, state)
            while True:
                try:
                    rc = child.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if stopping["at"] is not None and time.monotonic() - stopping["at"] > stop_grace:
                        child.kill()
            state.update(last_exit=rc, nspawn_pid=None)
            if stopping["at"] is not None:
                state["reason"] = "stopped by the lab"
                break
            if rc == REBOOT_EXIT:
                now = time.monotonic()
                reboots = [t for t in reboots if now - t < REBOOT_WINDOW] + [now]
                if len(reboots) > MAX_REBOOTS:
                    state["reason"] = f"reboot loop: {len(reboots)} reboots within {REBOOT_WINDOW:.0f}s"
                    break
                continue
            state["reason"] = "powered off" if rc == 0 else f"nspawn exited with {rc}"
            break
    finally:
        console.close()
        subprocess.run(["umount", merged], capture_output=True, timeout=30, check=False)
        remove_cgroups(cgroups)
        state.update(state="stopped", nspawn_pid=None, stopped=time.time())
        write_json(state_path, state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
