"""The lab gateway's WAN side: a link named as the inventory's WAN interface, in the gateway's namespace.

A Pi gateway has a second interface towards the home network; a lab node has only `eth0`. The
gateway stage's firewall names the WAN interface (forwarding, NAT), so the lab gives the gateway's
namespace a link of that name: one end of a veth pair whose other end (`<name>-end`) stays in the same
namespace, down: a cable to nowhere (the kernel here has no `dummy` driver), so nothing leaves.
`Lab.up` calls `ensure(inv)` once the node links exist; `lab.down` removes it with the namespace.
"""

from __future__ import annotations

from picluster.inventory import Host, Inventory
from picluster.lab.common import run
from picluster.lab.network import netns_name


def wan_host(inv: Inventory) -> Host | None:
    """Return the gateway when the inventory gives it a WAN interface."""
    gw = inv.gateway
    return gw if gw is not None and gw.wan is not None else None


def ensure(inv: Inventory, netns: str | None = None) -> str | None:
    """Create the gateway's WAN link (idempotent); return its name, or None when there is none."""
    gw = wan_host(inv)
    if gw is None or gw.wan is None or inv.lab is None:
        return None
    ns = netns or netns_name(inv.lab.bridge, gw.name)
    name = gw.wan.interface
    peer = f"{name[:11]}-end"
    if run(["ip", "-n", ns, "link", "show", name], check=False).returncode != 0:
        run(["ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer])
    run(["ip", "-n", ns, "link", "set", name, "up"])
    return name
