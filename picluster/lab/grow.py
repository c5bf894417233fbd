"""A grown lab: the lab inventory with more agents, written into the lab's state folder.

`grown_inventory(hosts/lab.yml, 20)` writes `<state_dir>/inventories/lab-agents20.yml`: the same
cluster (same bridge, same state folder, same keys) with 20 more agents after the last `node<N>`,
each with the next free address of the lab subnet (outside the gateway, the controller, the DHCP
range, the MetalLB pool, the service addresses and every host) and a unique locally administered MAC.
The base inventory itself is never written; paths in it are made absolute, so the copy works from
its new folder.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from picluster.inventory import load_inventory
from picluster.lab.common import LabError
from picluster.localfs import write_atomic

MAX_AGENTS = 200
MAC_PREFIX = "02:50:00:01"   # locally administered; the base lab's MACs are 02:50:00:00:xx:xx
# Keys whose values are controller paths, relative to the inventory's folder.
PATH_KEYS = ("ssh_key_file", "ssh_known_hosts", "state_dir")


def grown_path(state_dir: Path, agents: int) -> Path:
    """Where the inventory grown by `agents` agents is written, inside the lab's state folder."""
    return state_dir / "inventories" / f"lab-agents{agents}.yml"


def _in(ip: IPv4Address, pair: Any) -> bool:
    return bool(pair) and IPv4Address(str(pair[0])) <= ip <= IPv4Address(str(pair[1]))


def free_addresses(cluster: dict[str, Any], taken: set[IPv4Address]) -> Iterator[IPv4Address]:
    """The subnet's addresses no host, service, gateway, controller, DHCP lease or MetalLB pool uses: those
    after the last host's first, then the ones below it."""
    lan = cluster["lan"]
    network = IPv4Network(str(lan["cidr"]))
    used = {*taken, IPv4Address(str(lan["gateway"])), IPv4Address(str(cluster["controller"]))}
    used |= {IPv4Address(str(ip)) for ip in (cluster.get("services") or {}).values()}
    last = max(taken, default=network.network_address)
    ordered = sorted(network.hosts(), key=lambda ip: (ip <= last, ip))  # after the last host first, then below
    for ip in ordered:
        if ip not in used and not _in(ip, lan.get("dhcp_range")) and not _in(ip, cluster.get("metallb_pool")):
            yield ip


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def _absolute_paths(data: dict[str, Any], base: Path) -> None:
    """Make the inventory's controller paths absolute (its copy lives in another folder)."""
    layers = [data.get("vars") or {}, data.get("lab") or {}]
    layers += [(g or {}).get("vars") or {} for g in (data.get("groups") or {}).values()]
    layers += [(h or {}).get("vars") or {} for h in (data.get("hosts") or {}).values()]
    for layer in layers:
        for key in PATH_KEYS:
            if key in layer:
                layer[key] = _absolute(layer[key], base)
    for user in (data.get("cluster") or {}).get("admin_users") or []:
        if "ssh_key_files" in user:
            user["ssh_key_files"] = [_absolute(f, base) for f in user["ssh_key_files"]]


def grow(data: dict[str, Any], agents: int) -> dict[str, Any]:
    """Return inventory data with `agents` more agents (node<N+1>, ...), each with a free address and its own MAC."""
    if not 0 <= agents <= MAX_AGENTS:
        raise LabError(f"--agents must be between 0 and {MAX_AGENTS}, not {agents}")
    hosts: dict[str, Any] = dict(data.get("hosts") or {})
    template = next((h for h in reversed(hosts.values()) if h.get("role") == "agent"), None)
    if template is None:
        raise LabError("the lab inventory has no agent to copy; add one under hosts:")
    numbers = [int(m.group(1)) for n in hosts if (m := re.fullmatch(r"node(\d+)", n))]
    taken = {IPv4Address(str(h["ip"])) for h in hosts.values()}
    macs = {str(h.get("mac", "")).lower() for h in hosts.values()}
    addresses = free_addresses(data["cluster"], taken)
    number = max(numbers, default=0)
    for index in range(agents):
        number += 1
        name = f"node{number}"
        if name in hosts:
            raise LabError(f"{name} is in the lab inventory already")
        try:
            ip = next(addresses)
        except StopIteration:
            raise LabError(f"the lab subnet {data['cluster']['lan']['cidr']} has no free address for {name}: "
                           f"{index} agents fit") from None
        mac = f"{MAC_PREFIX}:{(index >> 8) & 0xff:02x}:{index & 0xff:02x}"
        if mac in macs:
            raise LabError(f"MAC {mac} of {name} is in the lab inventory already")
        hosts[name] = {**copy.deepcopy(template), "ip": str(ip), "mac": mac}
    return {**data, "hosts": hosts}


def grown_inventory(base: str | Path, agents: int) -> Path:
    """Write the lab inventory `base` grown by `agents` agents into its lab's state folder; return its path."""
    base = Path(base)
    inv = load_inventory(base)
    if inv.lab is None:
        raise LabError(f"{base}: no `lab:` section; only a lab inventory can grow")
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    _absolute_paths(data, base.resolve().parent)
    grown = grow(data, agents)
    path = grown_path(inv.lab.state_dir, agents)
    header = (f"# Generated by `invoke lab.up --agents {agents}` from {base.resolve()}: do not edit (made again\n"
              "# at each use). The same lab (bridge, state folder, keys) with more agents.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, header + yaml.safe_dump(grown, sort_keys=False))
    load_inventory(path)  # what we wrote is a valid inventory, or the error names it
    return path
