"""The vars every layer of an inventory may set (`vars`, `groups.<role>.vars`, a host's `vars`), typed.

`VAR_SCHEMA` gives each var its grammar and default; `settings_of` lays validated layers over the defaults
and types the result as `HostSettings`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picluster.inventory import grammar
from picluster.inventory.grammar import matches

_DURATION = re.compile(r"([0-9]{1,6})(s|m)?")


@dataclass(frozen=True)
class ShutdownGrace:
    """Graceful node shutdown: the kubelet's periods; logind's inhibit delay follows from them."""

    grace: int  # kubelet shutdownGracePeriod, seconds
    critical: int  # kubelet shutdownGracePeriodCriticalPods, seconds

    @property
    def logind_delay(self) -> int:
        """The InhibitDelayMaxSec the os stage sets: the grace period."""
        return self.grace


@dataclass(frozen=True)
class HostSettings:
    """The layered vars of one host, typed."""

    timezone: str
    locale: str
    ssh_port: int
    ssh_key_file: Path | None
    ssh_known_hosts: Path | None
    lan_interface: str
    packages: tuple[str, ...]
    ntp_upstream: tuple[str, ...]
    image: str | None  # a name in hosts/images.yml; None: the catalog's default
    k3s_node_labels: Mapping[str, str]  # labels K3S registers the node with (config.yaml node-label)
    shutdown: ShutdownGrace


# --- the grammars: each returns the typed value or raises ValueError("what it should be") ----------------


def seconds(value: Any) -> int:
    """30, "30", "30s" or "1m" as seconds."""
    m = _DURATION.fullmatch(str(value)) if isinstance(value, int | str) and not isinstance(value, bool) else None
    if not m:
        raise ValueError("a duration such as 30, 30s or 1m")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def port(value: Any) -> int:
    """A TCP port number."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError("a port number from 1 to 65535")
    return value


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    """The grammar of a string that `pattern` matches whole."""
    def check(value: Any) -> str:
        if not matches(pattern, value):
            raise ValueError(what)
        return str(value)
    return check


def _list_of(item: Callable[[Any], str], what: str) -> Callable[[Any], tuple[str, ...]]:
    """The grammar of a list whose every entry passes `item`."""
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"a list of {what}")
        try:
            return tuple(item(v) for v in value)
        except ValueError:
            raise ValueError(f"a list of {what}") from None
    return check


def _node_labels(value: Any) -> dict[str, str]:
    """Kubernetes node labels: {key: value}, as the API accepts them."""
    what = "a mapping of Kubernetes labels such as {disktype: ssd} ([prefix/]name: value, ≤ 63 of A-Za-z0-9-_.)"
    if not isinstance(value, dict):
        raise ValueError(what)
    out = {}
    for key, val in value.items():
        text = "" if val is None else str(val)
        if not matches(grammar.LABEL_KEY, key) or len(key.partition("/")[0]) > 253 \
                or isinstance(val, (dict, list)) or not grammar.LABEL_VALUE.fullmatch(text):
            raise ValueError(what)
        out[key] = text
    return out


# name -> (grammar, default). Paths are resolved by the loader (relative to the inventory file): None here.
VAR_SCHEMA: dict[str, tuple[Callable[[Any], Any] | None, Any]] = {
    "timezone": (grammar.timezone, "Etc/UTC"),
    "locale": (_pattern(grammar.LOCALE, grammar.LOCALE_WHAT), "C.UTF-8"),
    "ssh_port": (port, 22),
    "ssh_key_file": (None, None),
    "ssh_known_hosts": (None, None),
    "kubelet_shutdown_grace_period": (seconds, 30),
    "kubelet_shutdown_grace_period_critical_pods": (seconds, 10),
    "lan_interface": (_pattern(grammar.IFNAME, grammar.IFNAME_WHAT), "eth0"),
    "packages": (_list_of(_pattern(grammar.PACKAGE, ""), "Debian package names (a-z, 0-9, +, - and ., "
                          "starting with a letter or digit)"), ()),
    "ntp_upstream": (_list_of(grammar.time_server, "NTP servers (host names or IP addresses)"), ("pool.ntp.org",)),
    "image": (_pattern(grammar.IMAGE, grammar.IMAGE_WHAT), None),
    "k3s_node_labels": (_node_labels, {}),
}


def layered(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Every var: the defaults, overridden by each validated layer in turn."""
    out = {k: default for k, (_grammar, default) in VAR_SCHEMA.items()}
    for layer in layers:
        out.update(layer)
    return out


def settings_of(*layers: Mapping[str, Any]) -> HostSettings:
    """The typed settings of validated var layers, later layers overriding earlier ones and the defaults."""
    v = layered(*layers)
    return HostSettings(
        timezone=v["timezone"], locale=v["locale"], ssh_port=v["ssh_port"],
        ssh_key_file=v["ssh_key_file"], ssh_known_hosts=v["ssh_known_hosts"],
        lan_interface=v["lan_interface"], packages=tuple(v["packages"]), ntp_upstream=tuple(v["ntp_upstream"]),
        image=v["image"], k3s_node_labels=dict(v["k3s_node_labels"]),
        shutdown=ShutdownGrace(grace=v["kubelet_shutdown_grace_period"],
                               critical=v["kubelet_shutdown_grace_period_critical_pods"]),
    )
