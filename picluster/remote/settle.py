"""Before a host's steps: what an earlier run that died left on the host, in one round trip.

A change runs as a transient unit (`picluster-run-*`, see `execute.detached`) that outlives a controller
killed mid-run: the next run waits, bounded, until none is left, or says which is still running. A reboot an
earlier run scheduled and never waited for (`picluster-*reboot*.timer`) would strike this run unannounced:
it is cancelled, and this run takes the reboot over (the `needs-reboot` mark: the stage's reboot step does
it and waits, and the result says so). A host already going down is waited for until it is back.
"""

from __future__ import annotations

from dataclasses import dataclass

from picluster.facts import BOOT_ID
from picluster.remote.execute import UNIT_PREFIX

#: How long a new run waits for changes an earlier run left running (a package install takes minutes).
SETTLE_WAIT_S = 600


def settle_script(wait_s: int = SETTLE_WAIT_S) -> str:
    """Return the script that cancels stale reboot timers, waits for leftover units, and reports as key=value."""
    units = f"systemctl list-units --plain --no-legend --state=active,activating,deactivating '{UNIT_PREFIX}*'"
    return "\n".join([
        "export LC_ALL=C",
        "state=$(systemctl is-system-running 2>/dev/null)",
        "timers=$(systemctl list-units --plain --no-legend --state=active 'picluster-*reboot*.timer' 2>/dev/null "
        "| awk '{print $1}')",
        'for t in $timers; do systemctl stop -- "$t"; done',
        "start=$(date +%s); first=''",
        "while :; do",
        f"  busy=$({units} 2>/dev/null | awk '{{print $1}}')",
        '  [ -n "$first" ] || first=$busy',
        f'  [ -z "$busy" ] || [ $(( $(date +%s) - start )) -ge {wait_s} ] && break',
        "  sleep 1",
        "done",
        f"printf 'boot=%s\\n' \"$({BOOT_ID})\"",
        "printf 'state=%s\\ncancelled=%s\\nfirst=%s\\nbusy=%s\\nwaited=%s\\n' \"$state\" \"$(echo $timers)\" "
        "\"$(echo $first)\" \"$(echo $busy)\" \"$(( $(date +%s) - start ))\"",
    ])


@dataclass(frozen=True)
class Leftovers:
    """What an earlier run left on a host: its reboot timers (now cancelled), changes still running, the state."""

    boot_id: str
    state: str                   # systemctl is-system-running: "stopping" while the host goes down
    cancelled: tuple[str, ...]   # reboot timers this run cancelled (it takes the reboot over)
    found: tuple[str, ...]       # picluster units running when this run came
    busy: tuple[str, ...]        # still running after the wait
    waited: int

    @property
    def going_down(self) -> bool:
        """Whether the host is shutting down (a reboot an earlier run scheduled has begun)."""
        return self.state == "stopping"


def parse_settle(stdout: str) -> Leftovers:
    """Read `settle_script`'s key=value lines."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)

    def names(key: str) -> tuple[str, ...]:
        return tuple(values.get(key, "").split())

    waited = values.get("waited", "0").strip()
    return Leftovers(values.get("boot", "").strip(), values.get("state", "").strip(), names("cancelled"),
                     names("first"), names("busy"), int(waited) if waited.isdigit() else 0)


def describe(left: Leftovers) -> str:
    """One line on what was found and done, for the host's result ("" when the host was clean)."""
    parts = []
    if left.cancelled:
        timers = ", ".join(left.cancelled)
        parts.append(f"cancelled the reboot an earlier run scheduled and never saw through ({timers}); "
                     "this run reboots the host itself")
    if left.found and not left.busy:
        parts.append(f"waited {left.waited}s for changes an earlier run left running ({', '.join(left.found)})")
    return "; ".join(parts)
