"""The lab's pure parts, without root: sources parsing, proxy config, names, keys, a node's seeded disk."""

from __future__ import annotations

import stat
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import paramiko
import pytest
import yaml
from image_support.builder import build_raspi_image

from picluster.inventory import Inventory, load_inventory
from picluster.lab import base, common, keys, network, node, prereqs, proxy, supervisor
from picluster.lab.common import LabError
from picluster.stages.image.bootfs import FatPartition
from picluster.stages.image.partitions import file_reader, find_boot

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q admin@laptop"


@pytest.fixture
def lab_inv(tmp_path: Path) -> Inventory:
    data = yaml.safe_load((REPO / "hosts" / "lab.yml").read_text())
    data["cluster"]["admin_users"] = [{"name": "picluster", "ssh_keys": [KEY]}]
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


def test_archive_urls_come_from_the_hosts_sources_in_both_formats(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (d / "other.list").write_text("deb [arch=amd64] https://vendor.example/apt stable main\n")
    assert base.archive_urls("bookworm", (tmp_path / "none", d)) == {
        "debian": "http://mirror.example/debian", "security": "http://mirror.example/debian-security"}
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb http://old.example/debian/ bookworm main contrib\n")
    assert base.archive_urls("bookworm", (one_line,)) == {"debian": "http://old.example/debian"}
    with pytest.raises(LabError, match="no apt source for Debian trixie"):
        base.archive_urls("trixie", (one_line,))


def test_base_recipe_digest_changes_with_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.recipe_digest()
    assert before == base.recipe_digest()
    monkeypatch.setattr(base, "PACKAGES", (*base.PACKAGES, "chrony"))
    assert base.recipe_digest() != before


def test_base_is_cached_outside_the_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(base.CACHE_ENV, raising=False)
    assert not str(base.base_rootfs()).startswith(str(REPO))
    monkeypatch.setenv(base.CACHE_ENV, str(tmp_path))
    assert base.base_rootfs() == tmp_path / base.recipe_digest() / "rootfs"
    assert not base.is_built()


def test_proxy_config_binds_the_bridge_and_uses_the_hosts_archive(tmp_path: Path) -> None:
    archives = {"debian": "http://mirror.example/debian", "security": "http://mirror.example/debian-security"}
    conf = proxy.config(tmp_path, IPv4Address("10.250.0.10"), 3142, archives)
    lines = conf.splitlines()
    assert "BindAddress: 10.250.0.10" in lines and "Port: 3142" in lines
    assert "Remap-debrep: /debian mirror.example/debian ; file:backends_debian" in lines
    assert (tmp_path / "conf" / "backends_debian").read_text() == "http://mirror.example/debian/\n"
    assert (tmp_path / "conf" / "backends_debian_security").read_text() == "http://mirror.example/debian-security/\n"
    assert f"CacheDir: {tmp_path / 'cache'}" in lines


def test_link_names_fit_the_kernel_limit() -> None:
    assert network.netns_name("pclab0", "node1") == "pclab0-node1"
    assert network.veth_name("pclab0", 4) == "pclab0n4"
    with pytest.raises(LabError, match="at most 11"):
        network.veth_name("abcdefghijklm", 10)


def test_generated_keys_load_and_known_hosts_name_the_port(tmp_path: Path) -> None:
    pair = keys.ensure_keypair(tmp_path / "ssh" / "id_ed25519", "lab")
    assert stat.S_IMODE((tmp_path / "ssh" / "id_ed25519").stat().st_mode) == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "ssh" / "id_ed25519"))
    assert pair.public.split()[1] == loaded.get_base64()
    assert keys.ensure_keypair(tmp_path / "ssh" / "id_ed25519", "lab") == pair, "kept once made"
    assert keys.known_hosts_line("10.250.0.11", 22, pair.public).startswith("10.250.0.11 ssh-ed25519 ")
    assert keys.known_hosts_line("10.250.0.11", 2222, pair.public).startswith("[10.250.0.11]:2222 ssh-ed25519 ")


def _fake_base(root: Path) -> Path:
    for d, mode in (("etc", 0o755), ("etc/ssh", 0o755), ("etc/apt/apt.conf.d", 0o755), ("boot", 0o755),
                    ("var/lib/cloud", 0o700)):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d).chmod(mode)
    (root / "etc" / "locale.gen").write_text("# en_US.UTF-8 UTF-8\n# es_ES.UTF-8 UTF-8\n")
    return root


def test_seed_writes_a_flashed_pis_files_into_the_upper_layer(tmp_path: Path, lab_inv: Inventory) -> None:
    lower = _fake_base(tmp_path / "base")
    paths = node.NodePaths(tmp_path / "nodes" / "node1")
    host = lab_inv.hosts["node1"]
    key = keys.generate_ed25519("node1")
    assert node.seed(lab_inv, host, lower, paths, key, (IPv4Address("10.250.0.10"), 3142))
    up = paths.upper
    for name in ("config.txt", "cmdline.txt", "user-data", "network-config", "meta-data"):
        assert (up / "boot" / "firmware" / name).is_file()
    for name in ("user-data", "network-config", "meta-data"):
        assert (up / "var/lib/cloud/seed/nocloud" / name).read_text() == (up / "boot/firmware" / name).read_text()
    assert stat.S_IMODE((up / "boot/firmware/user-data").stat().st_mode) == 0o600, "it holds the host key"
    assert stat.S_IMODE((up / "var/lib/cloud").stat().st_mode) == 0o700, "modes come from the base"
    ud = yaml.safe_load((up / "boot/firmware/user-data").read_text())
    assert "bootcmd" not in ud, "a lab node has no disk to partition"
    assert ud["ssh_keys"]["ed25519_public"] == key.public
    assert (up / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip() == key.public
    assert (up / "etc/apt/apt.conf.d/01proxy").read_text() == 'Acquire::http::Proxy "http://10.250.0.10:3142";\n'
    assert "es_ES.UTF-8 UTF-8" in (up / "etc/locale.gen").read_text().splitlines()
    nc = yaml.safe_load((up / "boot/firmware/network-config").read_text())
    assert nc["ethernets"]["eth0"]["addresses"] == ["10.250.0.11/24"]
    assert not node.seed(lab_inv, host, lower, paths, key, (IPv4Address("10.250.0.10"), 3142)), "only once"


def test_supervisor_runs_nspawn_booted_unregistered_in_the_nodes_namespace() -> None:
    argv = supervisor.nspawn_argv({"merged": "/x/root", "machine": "pclab0-node1",
                                   "netns_path": "/run/netns/pclab0-node1"})
    assert argv[0] == "systemd-nspawn"
    for flag in ("--boot", "--register=no", "--keep-unit", "--directory=/x/root", "--machine=pclab0-node1",
                 "--network-namespace-path=/run/netns/pclab0-node1", "--capability=CAP_NET_ADMIN"):
        assert flag in argv


def test_the_supervisor_imports_only_the_standard_library() -> None:
    # one supervisor runs per node: it must stay light and start without the project's dependencies
    code = ("import sys; before = set(sys.modules); import picluster.lab.supervisor; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(' '.join(sorted(new - set(sys.stdlib_module_names))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["picluster"]


def test_a_lab_wait_that_runs_out_is_a_lab_error_naming_what_it_waited_for() -> None:
    calls = []

    def never() -> bool:
        calls.append(1)
        return False

    with pytest.raises(LabError, match=r"^timed out after 0s waiting for apt-cacher-ng$"):
        common.wait_for("apt-cacher-ng", never, 0.05, 0.01)
    assert len(calls) >= 2
    assert common.wait_for("x", lambda: "up", 0.05) == "up"


def test_lab_state_is_json_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "nodes" / "node1" / "run.json"
    common.write_json(path, {"state": "running", "boots": 2})
    assert path.read_text() == '{\n  "boots": 2,\n  "state": "running"\n}\n'
    assert common.read_json(path) == {"boots": 2, "state": "running"}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_prerequisites_fail_in_one_line_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prereqs.platform, "system", lambda: "Linux")
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root") as err:
        prereqs.ensure()
    assert "\n" not in str(err.value)
    monkeypatch.setattr(prereqs.platform, "system", lambda: "Darwin")
    with pytest.raises(LabError, match="needs Linux"):
        prereqs.ensure()


def test_a_flashed_image_gives_the_node_its_boot_files(tmp_path: Path, lab_inv: Inventory) -> None:
    built = build_raspi_image(tmp_path / "img")
    boot = find_boot(file_reader(str(built.raw)), "image")
    FatPartition(str(built.raw), boot.offset).write("cmdline.txt", b"console=tty1 flashed=yes\n")
    files = node.flashed_boot_files(built.raw)
    assert files["cmdline.txt"] == "console=tty1 flashed=yes\n"
    lower = _fake_base(tmp_path / "base")
    paths = node.NodePaths(tmp_path / "nodes" / "node2")
    node.seed(lab_inv, lab_inv.hosts["node2"], lower, paths, keys.generate_ed25519("n"),
              (IPv4Address("10.250.0.10"), 3142), files)
    assert (paths.upper / "boot/firmware/cmdline.txt").read_text() == "console=tty1 flashed=yes\n"
    with pytest.raises(LabError, match="cannot take the boot files"):
        node.flashed_boot_files(tmp_path / "missing.img")


def _lab_copy(tmp_path: Path) -> Path:
    """hosts/lab.yml copied into tmp_path/hosts with its relative paths, and its key file made, as lab.up would."""
    (tmp_path / "hosts").mkdir()
    path = tmp_path / "hosts" / "lab.yml"
    path.write_text((REPO / "hosts" / "lab.yml").read_text())
    (tmp_path / ".lab" / "ssh").mkdir(parents=True)
    (tmp_path / ".lab" / "ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    return path


def test_a_grown_lab_has_more_agents_each_with_its_own_free_address_and_mac(tmp_path: Path) -> None:
    from picluster.lab.grow import grown_inventory

    base_path = _lab_copy(tmp_path)
    before = base_path.read_text()
    grown = grown_inventory(base_path, 20)
    assert grown == tmp_path / ".lab" / "inventories" / "lab-agents20.yml"
    assert base_path.read_text() == before, "the base inventory is never written"
    base_inv, inv = load_inventory(base_path), load_inventory(grown)
    assert len(inv.hosts) == 25
    new = [h for name, h in inv.hosts.items() if name not in base_inv.hosts]
    assert [h.name for h in new] == [f"node{i}" for i in range(5, 25)]
    assert {h.role for h in new} == {"agent"}
    c = inv.cluster
    ips = [h.ip for h in inv.hosts.values()]
    macs = [h.mac.lower() for h in inv.hosts.values()]
    assert len(set(ips)) == len(ips) and len(set(macs)) == len(macs)
    for h in new:
        assert h.ip in c.lan.cidr and h.ip not in (c.lan.gateway, c.controller)
        assert not c.lan.dhcp_range[0] <= h.ip <= c.lan.dhcp_range[1]
        assert not c.metallb_pool[0] <= h.ip <= c.metallb_pool[1]
        assert h.ip not in set(c.services.values())
    # the same lab: its state folder, bridge and keys, from the new inventory's folder
    assert inv.lab is not None and base_inv.lab is not None
    assert inv.lab.state_dir == base_inv.lab.state_dir and inv.lab.bridge == base_inv.lab.bridge
    assert inv.hosts["node24"].ssh.key_file == base_inv.hosts["node1"].ssh.key_file
    assert inv.hosts["node24"].ssh.known_hosts == base_inv.hosts["node1"].ssh.known_hosts
    assert inv.hosts["node24"].data_partition == base_inv.hosts["node4"].data_partition
    assert all(network.veth_name(inv.lab.bridge, i) for i in range(len(inv.hosts)))
    assert grown_inventory(base_path, 20).read_text() == grown.read_text(), "made again the same"


def test_a_lab_grows_only_as_far_as_its_subnet_has_free_addresses(tmp_path: Path) -> None:
    from picluster.lab.grow import grow

    data = yaml.safe_load((REPO / "hosts" / "lab.yml").read_text())
    assert grow(data, 0)["hosts"] == data["hosts"]
    data["cluster"]["lan"]["cidr"] = "10.250.0.0/26"        # .1-.62: .15-.31 are free (DHCP from .32)
    data["cluster"]["lan"]["dhcp_range"] = ["10.250.0.32", "10.250.0.62"]
    data["cluster"]["metallb_pool"] = ["10.250.0.2", "10.250.0.9"]
    data["cluster"]["services"] = {"ntp": "10.250.0.1"}
    assert len(grow(data, 17)["hosts"]) == 5 + 17
    with pytest.raises(LabError, match="no free address for node22: 17 agents fit"):
        grow(data, 18)
    with pytest.raises(LabError, match="between 0 and"):
        grow(data, -1)


# The lab tasks alone, as `invoke` would run them (the rest of the namespace is not needed here).
LAB_TASKS = ("import sys; from invoke import Collection, Program; from picluster.tasks.lab import ns; "
             "Program(namespace=Collection(ns)).run(['invoke', *sys.argv[1:]])")


def test_lab_tasks_take_agents_and_write_the_grown_inventory(tmp_path: Path) -> None:
    from picluster.tasks import lab as lab_tasks

    base_path = _lab_copy(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", LAB_TASKS,
         "lab.inventory", "--inventory", str(base_path), "--agents", "3"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / ".lab" / "inventories" / "lab-agents3.yml")
    assert list(load_inventory(out.stdout.strip()).hosts)[-3:] == ["node5", "node6", "node7"]
    bad = subprocess.run(
        [sys.executable, "-c", LAB_TASKS,
         "lab.inventory", "--inventory", str(base_path), "--agents", "500"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "between 0 and 200" in bad.stderr
    for name in ("up", "down", "status", "inventory"):
        assert "agents" in [a.name for a in lab_tasks.ns[name].get_arguments()], name


def test_a_big_lab_raises_the_hosts_inotify_instances_and_puts_the_value_back(tmp_path: Path) -> None:
    from picluster.lab import limits

    knob = tmp_path / "max_user_instances"
    knob.write_text("128\n")
    assert limits.needed_instances(25) > 128 + 8 * 25, "each node's systemd needs about 8"
    found = limits.raise_inotify(25, knob)
    assert found == 128 and int(knob.read_text()) == limits.needed_instances(25)
    assert limits.raise_inotify(5, knob) is None, "never lowered"
    assert int(knob.read_text()) == limits.needed_instances(25)
    assert limits.restore_inotify(found, knob) and knob.read_text() == "128\n"
    assert not limits.restore_inotify(None, knob), "nothing raised, nothing restored"
    knob.write_text("100000\n")
    assert limits.raise_inotify(25, knob) is None and knob.read_text() == "100000\n"
