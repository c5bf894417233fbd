"""The exact grammar of every inventory value that reaches a shell, cloud-init, a config file or ssh_config.

Each grammar is a whole-string match (`re.fullmatch`: a trailing newline or CR is never accepted) or a
function that returns the typed value or raises ValueError("what it should be"). None of them admits a
control character, a space, a quote, `;`, `$` or a leading `-`, so no value can carry a second line, a
directive or an option into what it is written to.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from functools import cache
from typing import Any

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DNS_LABEL = "a DNS label (a-z, 0-9 and -, at most 63, not starting or ending with -)"
# useradd's default NAME_REGEX (Debian), at most 32 characters
USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USER_WHAT = "a user name (a-z, 0-9, _ and -, starting with a letter or _, at most 32)"
GROUP_WHAT = "a group name (a-z, 0-9, _ and -, starting with a letter or _, at most 32)"
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
SIZE = re.compile(r"[0-9]+[KMGT]?")
# the kernel's names of whole disks, and of their partitions
DISK = re.compile(r"/dev/(sd[a-z]{1,2}|vd[a-z]{1,2}|nvme[0-9]{1,2}n[0-9]{1,2}|mmcblk[0-9]{1,2})")
DISK_WHAT = "a whole disk's device path such as /dev/sda, /dev/nvme0n1 or /dev/mmcblk0"
PARTITION = re.compile(r"/dev/(sd[a-z]{1,2}[1-9][0-9]?|vd[a-z]{1,2}[1-9][0-9]?|nvme[0-9]{1,2}n[0-9]{1,2}p[1-9][0-9]?"
                       r"|mmcblk[0-9]{1,2}p[1-9][0-9]?)")
PARTITION_WHAT = "a partition's device path such as /dev/sda3, /dev/nvme0n1p3 or /dev/mmcblk0p3"
# IFNAMSIZ: at most 15 bytes, no '/', ':' or whitespace, not '.' or '..'; here also no quote, ',' or '$'
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
IFNAME_WHAT = "an interface name (at most 15 of A-Z, a-z, 0-9, _, . and -, not starting with - or .)"
LEASE = re.compile(r"[1-9][0-9]{0,8}[mhdw]?|infinite")
LEASE_WHAT = "a DHCP lease time such as 12h, 45m, 1d, 3600 or infinite"
HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,29}(/[A-Za-z0-9_+-]{1,30}){0,3}")
LOCALE = re.compile(r"C|POSIX|C\.(UTF-8|utf8)|[a-z]{2,3}(_[A-Z]{2})?(\.[A-Za-z0-9-]{1,20})?(@[a-z]{1,20})?")
LOCALE_WHAT = "a locale such as es_ES.UTF-8, en_US.UTF-8 or C.UTF-8"
# Debian Policy 5.6.7: lower case letters, digits, + - and ., at least two, starting alphanumeric
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")
PACKAGE_WHAT = "a Debian package name (a-z, 0-9, +, - and ., starting with a letter or digit)"
SECRET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SECRET_WHAT = "a secret name (A-Z, a-z, 0-9, _, - and ., not starting with - or .)"
IMAGE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
IMAGE_WHAT = "an image name of hosts/images.yml (a-z, 0-9, ., _ and -)"
# an SSID is 1-32 bytes; here printable, without quotes or backslashes, not padded with spaces
_SSID_CHAR = r"[^\x00-\x1f\x7f\x85\u2028\u2029\"\\]"
_SSID_END = r"[^\x00-\x1f\x7f\x85\u2028\u2029\"\\\s]"
SSID = re.compile(f"{_SSID_END}({_SSID_CHAR}*{_SSID_END})?")
SSID_WHAT = "a Wi-Fi SSID (1 to 32 bytes, no control characters, quotes, backslashes or outer spaces)"
CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
PATH_WHAT = "a file path without control characters or '${'"
KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com)"
                 r" [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f\x85\u2028\u2029]*)?")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
BRIDGE = re.compile(r"[a-z][a-z0-9]{0,14}")


def matches(pattern: re.Pattern[str], value: Any) -> bool:
    """True when `value` is a string that `pattern` matches whole."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def shown(value: Any, limit: int = 60) -> str:
    """`value` for a one-line message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def domain(value: str) -> bool:
    """True for a DNS name of labels (a-z, 0-9, -) joined by dots, at most 253 characters."""
    return len(value) <= 253 and all(LABEL.fullmatch(label) for label in value.split("."))


@cache
def known_zones() -> frozenset[str]:
    """The time zones of this controller's tz database (system zoneinfo or the tzdata package); may be empty."""
    try:
        return frozenset(zoneinfo.available_timezones())
    except (OSError, ValueError):  # pragma: no cover - a broken tz installation
        return frozenset()


def timezone(value: Any) -> str:
    """A real time zone such as Europe/Madrid (checked against the controller's tz database when it has one)."""
    if not matches(ZONE, value):
        raise ValueError("a time zone such as Europe/Madrid or Etc/UTC")
    zones = known_zones()
    if zones and value not in zones:
        raise ValueError("a time zone of the tz database such as Europe/Madrid or Etc/UTC (timedatectl list-timezones)")
    return str(value)


def time_server(value: Any) -> str:
    """An NTP server: a host name or an IP address."""
    if isinstance(value, str) and "%" not in value:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if HOSTNAME.fullmatch(value) and not value.replace(".", "").isdigit():
                return value
    raise ValueError("a host name such as pool.ntp.org or an IP address")


def local_path(value: Any) -> str:
    """A controller file path: no control character (no second line) and no '${' (which ssh would expand)."""
    if not isinstance(value, str) or not value or value != value.strip() or CONTROL.search(value) \
            or "${" in value:
        raise ValueError(PATH_WHAT)
    return value


def ssh_public_key_line(value: Any) -> bool:
    """True for one OpenSSH public key line ('ssh-ed25519 AAAA... comment') without control characters."""
    return matches(KEY, value)
