"""pyinfra's own CLI, counting SSH sessions per peer and recording each host's changed operations.

    <pyinfra venv>/bin/python benchmarks/os/pyinfra_counted.py OUT.json -- <pyinfra arguments>

Runs in pyinfra's venv (never imported by picluster). Sessions are counted as for picluster: every
`paramiko.Transport.open_session` (an exec or an SFTP channel) per peer address.
"""

from __future__ import annotations

import atexit
import collections
import json
import sys
import threading
from typing import Any

import paramiko

counts: collections.Counter[str] = collections.Counter()
changed: dict[str, list[str]] = {}
failed: dict[str, list[str]] = {}
_lock = threading.Lock()
_open_session = paramiko.Transport.open_session


def _counted(self: paramiko.Transport, *args: Any, **kwargs: Any) -> Any:
    with _lock:
        counts[str(self.getpeername()[0])] += 1
    return _open_session(self, *args, **kwargs)


paramiko.Transport.open_session = _counted  # type: ignore[method-assign]


def _record(state: Any) -> None:
    """Each host's changed and failed operations, by name."""
    for op_hash in state.get_op_order():
        op_name = ", ".join(sorted(state.op_meta[op_hash].names)) or op_hash
        for host in state.inventory.iter_activated_hosts():
            if op_hash not in state.ops[host]:
                continue
            meta = state.ops[host][op_hash].operation_meta
            if not meta.did_succeed(_raise_if_not_complete=False):
                failed.setdefault(host.name, []).append(op_name)
            elif meta.did_change():
                changed.setdefault(host.name, []).append(op_name)


def main() -> int:
    out = sys.argv[1]
    args = sys.argv[sys.argv.index("--") + 1:]

    def dump() -> None:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"sessions": dict(counts), "changed": changed, "failed": failed}, fh, indent=2)

    atexit.register(dump)
    import pyinfra_cli.cli as cli

    original = cli.print_results

    def print_and_record(state: Any) -> None:
        _record(state)
        original(state)

    cli.print_results = print_and_record
    sys.argv = ["pyinfra", *args]
    from pyinfra_cli.main import main as pyinfra_main

    return pyinfra_main() or 0


if __name__ == "__main__":
    sys.exit(main())
