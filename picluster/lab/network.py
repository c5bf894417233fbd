"""The lab's network: one bridge with the controller's address, one netns + veth pair per node.

Every name starts with the bridge name, so `down` finds what a crashed `up` left behind:
bridge `pclab0`, host-side veths `pclab0n<i>`, namespaces `pclab0-<host>` (the node's end is `eth0`
inside it). Nothing is routed or NATed; the addresses exist only on these links.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from picluster.lab.common import LabError, run

NETNS_DIR = Path("/run/netns")


def netns_name(bridge: str, host: str) -> str:
    return f"{bridge}-{host}"


def veth_name(bridge: str, index: int) -> str:
    name = f"{bridge}n{index}"
    if len(name) > 15:
        raise LabError(f"lab.bridge {bridge!r} is too long for per-node link names; use at most 11 characters")
    return name


def _links() -> list[dict[str, object]]:
    return json.loads(run(["ip", "-j", "-d", "link", "show"]).stdout or "[]")


def _addresses() -> list[dict[str, object]]:
    return json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]")


def lab_links(bridge: str) -> list[str]:
    """Links in the root namespace that belong to the lab: the bridge and its veths."""
    return [str(link["ifname"]) for link in _links()
            if link["ifname"] == bridge or str(link["ifname"]).startswith(f"{bridge}n")]


def lab_netns(bridge: str) -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{bridge}-")]


def check_subnet_free(bridge: str, cidr: IPv4Network) -> None:
    """Refuse to put the lab on a subnet the host already uses on another interface."""
    for link in _addresses():
        if link["ifname"] == bridge or str(link["ifname"]).startswith(f"{bridge}n"):
            continue
        for a in link.get("addr_info", []):  # type: ignore[attr-defined]
            if a.get("family") != "inet":
                continue
            net = IPv4Interface(f"{a['local']}/{a['prefixlen']}").network
            if net.overlaps(cidr):
                raise LabError(f"the lab subnet {cidr} overlaps {net} on {link['ifname']}; "
                               "give the lab another cluster.lan.cidr in the lab inventory")


def ensure_bridge(bridge: str, controller: IPv4Address, cidr: IPv4Network) -> bool:
    """The bridge with the controller's address, up. Returns True when it had to be created."""
    created = bridge not in lab_links(bridge)
    if created:
        run(["ip", "link", "add", "name", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    address = f"{controller}/{cidr.prefixlen}"
    have = run(["ip", "-j", "addr", "show", "dev", bridge]).stdout
    if address.split("/")[0] not in have:
        run(["ip", "addr", "add", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    return created


def ensure_node_link(bridge: str, netns: str, veth: str, mac: str) -> None:
    """The node's namespace with `eth0` (its inventory MAC), cabled to the bridge through `veth`."""
    if netns not in lab_netns(bridge):
        run(["ip", "netns", "add", netns])
    have_eth0 = run(["ip", "-n", netns, "link", "show", "eth0"], check=False).returncode == 0
    if not have_eth0:
        run(["ip", "link", "del", veth], check=False)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "-n", netns, "link", "set", "eth0", "address", mac])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def remove_all(bridge: str) -> list[str]:
    """Delete every lab namespace, veth and the bridge; return what was removed."""
    removed = []
    for ns in lab_netns(bridge):
        run(["ip", "netns", "delete", ns])
        removed.append(f"netns {ns}")
    for link in lab_links(bridge):
        if link != bridge:
            run(["ip", "link", "del", link], check=False)
            removed.append(f"link {link}")
    if bridge in lab_links(bridge):
        run(["ip", "link", "del", bridge])
        removed.append(f"bridge {bridge}")
    return removed
