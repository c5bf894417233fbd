"""The rehearsal lab: the hosts of a lab inventory as systemd-nspawn nodes on a private bridge.

`Lab(inventory).up()` makes sure of, in order: the host tools, the cached base rootfs, the lab's SSH
keys, the bridge with the controller's address, the apt proxy, and per node its namespace + veth,
its seeded disk and its supervisor; then it waits (bounded) until every node answers SSH as the
automation user. Each step checks first, so `up` on a running lab changes nothing. `down` finds what
belongs to the lab from the state folder and by name prefix, so it also cleans up after a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import picluster
from picluster.cloudinit import HostKey
from picluster.inventory import Host, Inventory, load_inventory
from picluster.lab import base, keys, limits, network, node, prereqs, proxy, wan
from picluster.lab.common import LabError, all_pids, pid_cmdline, read_json, write_json
from picluster.lab.node import NodePaths
from picluster.lab.ready import READY_STATES as READY_STATES  # where it was before
from picluster.lab.ready import ssh_ready

DEFAULT_INVENTORY = "hosts/lab.yml"
INVENTORY_ENV = "PICLUSTER_LAB_INVENTORY"
BOOT_TIMEOUT = 180.0     # first boot of every node, cloud-init included, until SSH answers
STOP_GRACE = 8.0         # a node's clean shutdown before it is killed
BOOT_WAIT_SLICE = 20.0   # the longest one SSH session waits for a node's boot to finish before asking again
SUPERVISOR_MODULE = "picluster.lab.supervisor"
PREPARE_WORKERS = 8      # nodes whose links and disks are made at once (their writes wait on the disk, not the CPU)


def default_inventory_path() -> Path:
    return Path(os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: str                # running | stopped
    address: str
    uptime: float | None      # seconds since this boot began
    reason: str | None = None  # why it stopped, when it did


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that has exited
    except ChildProcessError:
        pass
    return bool(pid_cmdline(pid))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Lab:
    """One lab, described by a lab inventory (one with a `lab:` section)."""

    def __init__(self, inventory: str | os.PathLike[str] | Inventory, console: Any = None) -> None:
        inv = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
        if inv.lab is None:
            raise LabError(f"{inv.path}: no `lab:` section; the lab runs only from a lab inventory "
                           f"such as {DEFAULT_INVENTORY}")
        self.inv = inv
        self.settings = inv.lab
        self.dir = inv.lab.state_dir
        self.console = console
        self.hosts: list[Host] = list(inv.hosts.values())

    # --- names and paths ---------------------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return self.settings.bridge

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def proxy_dir(self) -> Path:
        return self.dir / "apt-cacher-ng"

    @property
    def proxy_address(self) -> tuple[Any, int]:
        return self.inv.cluster.controller, self.settings.apt_proxy_port

    def paths(self, name: str) -> NodePaths:
        return NodePaths(self.dir / "nodes" / name)

    def flashed_image(self, name: str) -> Path:
        """Where an image the image stage flashed for host `name` is looked for: when there is one,
        the node's config.txt and cmdline.txt come from its boot partition."""
        return self.dir / "images" / f"{name}.img"

    def host(self, name: str) -> Host:
        try:
            return self.inv.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r} in {self.inv.path}; hosts: {', '.join(self.inv.hosts)}") from None

    def _key_file(self) -> Path:
        kf = self.hosts[0].ssh.key_file
        return Path(kf) if kf else self.dir / "ssh" / "id_ed25519"

    def _known_hosts(self) -> Path:
        kh = self.hosts[0].ssh.known_hosts
        return Path(kh) if kh else self.dir / "ssh" / "known_hosts"

    def _say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    # --- up ------------------------------------------------------------------------------------------

    def up(self, timeout: float = BOOT_TIMEOUT) -> dict[str, float]:
        """Bring the lab up (idempotent); return seconds until each node answered SSH."""
        if self.is_up():
            self._say(f"[bold]lab[/]: {self.inv.cluster.name} is up already; nothing to do")
            return {}
        started = time.monotonic()
        prereqs.ensure(self.console)
        lower = self._ensure_base()
        host_keys = self._ensure_keys()
        cidr = self.inv.cluster.lan.cidr
        network.check_subnet_free(self.bridge, cidr)
        network.ensure_bridge(self.bridge, self.inv.cluster.controller, cidr)
        address, port = self.proxy_address
        proxy_pid = proxy.start(self.proxy_dir, address, port, base.archive_urls())
        state = read_json(self.state_file)
        state.update(bridge=self.bridge, base=str(lower), proxy_pid=proxy_pid, nodes=state.get("nodes", {}))
        found = limits.raise_inotify(len(self.hosts))
        if found is not None:  # the first raise is the host's own value; a later (bigger) lab keeps that one
            state.setdefault("inotify_instances_found", found)
            self._say(f"[bold]lab[/]: fs.inotify.max_user_instances {found} -> "
                      f"{limits.needed_instances(len(self.hosts))} for {len(self.hosts)} nodes (lab.down restores it)")
        write_json(self.state_file, state)
        booting = []
        # Each node's link and disk, a bounded number at once; each node starts as soon as its disk is ready.
        with ThreadPoolExecutor(max_workers=min(PREPARE_WORKERS, len(self.hosts))) as pool:
            for f in [pool.submit(self._link, index, h) for index, h in enumerate(self.hosts)]:
                f.result()
            wan.ensure(self.inv)  # the gateway's WAN interface, when the inventory gives it one
            stopped = [h for h in self.hosts if not self._node_running(h.name)]
            seeding = {pool.submit(self._seed, h, lower, host_keys[h.name]): h for h in stopped}
            for f in as_completed(seeding):
                h = seeding[f]
                f.result()
                state["nodes"][h.name] = {"supervisor_pid": self._start_supervisor(h, lower),
                                          "netns": network.netns_name(self.bridge, h.name)}
                write_json(self.state_file, state)
                booting.append(h)
        booting.sort(key=self.hosts.index)
        times = self.wait_ssh(booting, timeout=timeout, since=started)
        self._say(f"[bold]lab[/]: {len(self.hosts)} nodes up in {time.monotonic() - started:.1f}s "
                  f"(ssh: invoke lab.ssh HOST)")
        return times

    def _link(self, index: int, h: Host) -> None:
        network.ensure_node_link(self.bridge, network.netns_name(self.bridge, h.name),
                                 network.veth_name(self.bridge, index), h.mac)

    def _seed(self, h: Host, lower: Path, host_key: HostKey) -> None:
        """The node's disk, seeded once (afresh when it was made on another base)."""
        paths = self.paths(h.name)
        if paths.seeded.exists() and paths.seeded.read_text(encoding="utf-8") != str(lower):
            self._say(f"[yellow]lab[/]: {h.name}'s disk was made on another base; starting it afresh")
            node.wipe(paths)
        image = self.flashed_image(h.name)
        boot_files = node.flashed_boot_files(image) if image.is_file() else None
        node.seed(self.inv, h, lower, paths, host_key, self.proxy_address, boot_files)

    def is_up(self) -> bool:
        state = read_json(self.state_file)
        return (bool(state) and proxy.is_ours(state.get("proxy_pid"), self.proxy_dir)
                and all(self._node_running(h.name) for h in self.hosts)
                and self.bridge in network.lab_links(self.bridge))

    def _ensure_base(self) -> Path:
        if base.is_built():
            return base.base_rootfs()
        self._say(f"[bold]lab[/]: building the base rootfs (Debian {base.SUITE}, once) into {base.cache_root()}")
        started = time.monotonic()
        if self.console is None:
            path, _ = base.ensure()
        else:
            with self.console.status("debootstrap") as status:
                path, _ = base.ensure(lambda line: status.update(f"[dim]base:[/] {line[:100]}"))
        self._say(f"[bold]lab[/]: base built in {time.monotonic() - started:.0f}s")
        return path

    def _ensure_keys(self) -> dict[str, HostKey]:
        """The controller key pair, one pinned host key per node, and a known_hosts naming them."""
        keys.ensure_keypair(self._key_file(), f"picluster-lab@{self.inv.cluster.name}")
        host_keys = {h.name: keys.ensure_keypair(self.dir / "ssh" / "hosts" / f"{h.name}_ed25519", h.name)
                     for h in self.hosts}
        keys.write_known_hosts(self._known_hosts(),
                               [(h.ssh.address, h.ssh.port, host_keys[h.name].public) for h in self.hosts])
        return host_keys

    def _start_supervisor(self, h: Host, lower: Path) -> int:
        paths = self.paths(h.name)
        paths.run_state.unlink(missing_ok=True)
        write_json(paths.supervisor_config, {
            "name": h.name, "machine": network.netns_name(self.bridge, h.name),
            "lower": str(lower), "upper": str(paths.upper), "work": str(paths.work),
            "merged": str(paths.merged),
            "netns_path": str(network.NETNS_DIR / network.netns_name(self.bridge, h.name)),
            "state": str(paths.run_state), "console": str(paths.console), "stop_grace": STOP_GRACE,
        })
        package_parent = str(Path(picluster.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent,
                                                                        os.environ.get("PYTHONPATH")])))
        with open(paths.dir / "supervisor.log", "ab") as log:
            proc = subprocess.Popen(
                # In a private mount namespace (the node's overlay mount dies with it) and in the
                # node's network namespace, so the sysfs nspawn mounts for the node lists the node's
                # eth0, not the host's interfaces.
                ["unshare", "--mount", "--propagation", "private", "--",
                 "nsenter", f"--net={network.NETNS_DIR / network.netns_name(self.bridge, h.name)}", "--",
                 sys.executable, "-m", SUPERVISOR_MODULE, str(paths.supervisor_config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/", env=env,
                start_new_session=True)
        return proc.pid

    # --- waiting for SSH -----------------------------------------------------------------------------

    def wait_ssh(self, hosts: Sequence[Host], timeout: float = BOOT_TIMEOUT,
                 since: float | None = None) -> dict[str, float]:
        """Wait (bounded) until each host answers SSH; return seconds from `since` per host."""
        if not hosts:
            return {}
        since = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        times: dict[str, float] = {}

        def wait_one(h: Host, done: Callable[[], None]) -> None:
            stopped_seen = 0
            while not ssh_ready(h, wait=min(BOOT_WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
                status = self._node_status(h)
                # NOTE: one "stopped" reading can be the supervisor mid-exec (its /proc cmdline is empty for
                # an instant); only two in a row mean the node really stopped
                stopped_seen = stopped_seen + 1 if status.state != "running" else 0
                if stopped_seen >= 2:
                    raise LabError(f"{h.name} stopped while booting ({status.reason or 'no reason given'}); "
                                   f"see {self.paths(h.name).console}")
                if time.monotonic() > deadline:
                    raise LabError(f"{h.name} did not answer SSH on {h.ssh.address}:{h.ssh.port} within "
                                   f"{timeout:.0f}s; see {self.paths(h.name).console}")
                time.sleep(0.25)
            times[h.name] = time.monotonic() - since
            done()

        progress = None
        if self.console is not None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(TextColumn("[bold]lab[/]: waiting for SSH"), BarColumn(),
                                TextColumn("{task.completed}/{task.total} nodes"), TimeElapsedColumn(),
                                console=self.console, transient=True)
            progress.start()
            task = progress.add_task("ssh", total=len(hosts))

        def done() -> None:
            if progress is not None:
                progress.advance(task)

        try:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                for f in [pool.submit(wait_one, h, done) for h in hosts]:
                    f.result()
        finally:
            if progress is not None:
                progress.stop()
        return times

    # --- status, start ------------------------------------------------------------------------------

    def _node_running(self, name: str) -> bool:
        return self._node_status(self.host(name)).state == "running"

    def _supervisor(self, name: str) -> int | None:
        """The pid of the node's live supervisor, if it has one."""
        pid = read_json(self.state_file).get("nodes", {}).get(name, {}).get("supervisor_pid")
        return pid if _alive(pid) and SUPERVISOR_MODULE in pid_cmdline(pid) else None

    def _node_status(self, h: Host) -> NodeStatus:
        """A node runs while its supervisor does: it exits when the node powers off (not on reboot)."""
        run = read_json(self.paths(h.name).run_state)
        if self._supervisor(h.name) is None or run.get("state") == "stopped":
            return NodeStatus(h.name, "stopped", str(h.ip), None, run.get("reason"))
        started = run.get("started")
        return NodeStatus(h.name, "running", str(h.ip), time.time() - float(started) if started else 0.0)

    def status(self) -> list[NodeStatus]:
        """One row per node of the inventory: state, address and uptime."""
        return [self._node_status(h) for h in self.hosts]

    def start(self, name: str, timeout: float = BOOT_TIMEOUT) -> float | None:
        """Start a stopped node on its existing disk; return seconds until it answered SSH."""
        h = self.host(name)
        if self._node_running(name):
            self._say(f"[bold]lab[/]: {name} is running already")
            return None
        state = read_json(self.state_file)
        if not state or self.bridge not in network.lab_links(self.bridge) or not self.paths(name).seeded.exists():
            raise LabError(f"the lab is not up; run `invoke lab.up --inventory {self.inv.path}` first")
        previous = self._supervisor(name)
        if previous is not None:  # still tidying up after the node's poweroff
            if self._wait_gone([previous], STOP_GRACE + 4):
                raise LabError(f"{name}'s previous run (pid {previous}) does not end; run `invoke lab.down`")
        started = time.monotonic()
        index = self.hosts.index(h)
        network.ensure_node_link(self.bridge, network.netns_name(self.bridge, name),
                                 network.veth_name(self.bridge, index), h.mac)
        state.setdefault("nodes", {})[name] = {"supervisor_pid": self._start_supervisor(h, Path(state["base"])),
                                               "netns": network.netns_name(self.bridge, name)}
        write_json(self.state_file, state)
        return self.wait_ssh([h], timeout=timeout, since=started)[name]

    def ssh_argv(self, name: str, command: Sequence[str] = ()) -> list[str]:
        """An `ssh` command line into the node with the lab's key and pinned known_hosts."""
        t = self.host(name).ssh
        return ["ssh", "-i", str(t.key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={t.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-p", str(t.port), f"{t.user}@{t.address}", *command]

    # --- down ----------------------------------------------------------------------------------------

    def _our_processes(self) -> tuple[list[int], list[int]]:
        """(supervisors, nspawn processes) of this lab, found by their command lines."""
        nodes_dir = str(self.dir / "nodes")
        netns_prefix = f"--network-namespace-path={network.NETNS_DIR}/{self.bridge}-"
        supervisors, nspawns = [], []
        for pid in all_pids():
            argv = pid_cmdline(pid)
            if SUPERVISOR_MODULE in argv and any(a.startswith(nodes_dir) for a in argv):
                supervisors.append(pid)
            elif argv and argv[0].endswith("systemd-nspawn") and any(a.startswith(netns_prefix) for a in argv):
                nspawns.append(pid)
        return supervisors, nspawns

    def _wait_gone(self, pids: list[int], timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p in pids if _alive(p)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def mounts(self) -> list[str]:
        """Mount points on this host that belong to the lab (none outside a running supervisor)."""
        prefixes = (str(self.dir) + "/", f"{network.NETNS_DIR}/{self.bridge}-")
        found = []
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefixes):
                    found.append(point)
        return found

    def down(self, keep_disks: bool = False) -> list[str]:
        """Remove every node, namespace, link, mount, proxy and process of the lab; return what went."""
        removed: list[str] = []
        supervisors, nspawns = self._our_processes()
        for pid in supervisors:
            _signal(pid, signal.SIGTERM)  # each shuts its node down cleanly, then kills it after STOP_GRACE
        left = self._wait_gone(supervisors, STOP_GRACE + 4)
        for pid in left + [p for p in nspawns if _alive(p)]:
            _signal(pid, signal.SIGKILL)
        removed += [f"node supervisor {p}" for p in supervisors]
        # Whatever still runs inside a node's network namespace (a node whose nspawn was killed).
        for ns in network.lab_netns(self.bridge):
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            for pid in (int(p) for p in out.stdout.split() if p.isdigit()):
                _signal(pid, signal.SIGKILL)
                removed.append(f"process {pid} in {ns}")
        _, nspawns = self._our_processes()
        for pid in nspawns:
            _signal(pid, signal.SIGKILL)
        self._wait_gone(supervisors + nspawns, 5)
        proxies = proxy.find(self.proxy_dir)
        for pid in proxies:
            _signal(pid, signal.SIGTERM)
        for pid in self._wait_gone(proxies, 3):
            _signal(pid, signal.SIGKILL)
        self._wait_gone(proxies, 3)
        removed += [f"apt proxy {p}" for p in proxies]
        removed += network.remove_all(self.bridge)
        removed += self._remove_cgroups()
        for point in reversed(self.mounts()):  # none normally: node mounts are private to supervisors
            subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30, check=False)
            removed.append(f"mount {point}")
        if not keep_disks:
            for h in self.hosts:
                node.wipe(self.paths(h.name))
        if limits.restore_inotify(read_json(self.state_file).get("inotify_instances_found")):
            removed.append("raised fs.inotify.max_user_instances (restored)")
        self.state_file.unlink(missing_ok=True)
        return removed

    def _remove_cgroups(self) -> list[str]:
        """The nodes' cgroups that supervisors killed before tidying up left behind."""
        from picluster.lab import supervisor

        left: set[Path] = set()
        for h in self.hosts:
            machine = network.netns_name(self.bridge, h.name)
            recorded = read_json(self.paths(h.name).run_state).get("cgroups", [])
            left |= {d for d in {*map(Path, recorded), *supervisor.cgroup_dirs(machine)}
                     if d.name == machine and d.is_dir()}
        removed = []
        deadline = time.monotonic() + 5  # killed processes leave their cgroups once the kernel reaps them
        while left:
            for d in sorted(left):
                if supervisor.rmdir_tree(d):
                    removed.append(f"cgroup {d}")
                    left.discard(d)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return removed
