#!/usr/bin/env python3
"""A stand-in for sysctl, systemctl, apt-get and modprobe: records its argv, keeps state in JSON.

Called through symlinks named after the tool; FAKE_STATE names the state directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    tool = Path(sys.argv[0]).name
    args = sys.argv[1:]
    state_dir = Path(os.environ["FAKE_STATE"])
    with (state_dir / "calls.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps([tool, *args]) + "\n")
    state_file = state_dir / "state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    words = [a for a in args if not a.startswith("-")]
    rc = 0
    if tool == "sysctl" and "-w" in args:
        key, _, value = words[-1].partition("=")
        state.setdefault("sysctl", {})[key] = value
    elif tool == "sysctl":
        value = state.get("sysctl", {}).get(words[-1])
        if value is None:
            return 255
        print(value)
    elif tool == "systemctl":
        units = state.setdefault("units", {})
        verb, unit = words[0], (words[1] if len(words) > 1 else "")
        u = units.setdefault(unit, {"enabled": "disabled", "active": "inactive"}) if unit else {}
        if verb == "is-enabled":
            print(u["enabled"])
            rc = 0 if u["enabled"] == "enabled" else 1
        elif verb == "is-active":
            print(u["active"])
            rc = 0 if u["active"] == "active" else 3
        elif verb == "enable":
            u["enabled"] = "enabled"
        elif verb in ("start", "restart") and not state.get("start_noop"):
            u["active"] = "active"
        elif verb == "stop":
            u["active"] = "inactive"
    elif tool == "apt-get" and "install" in words:
        state.setdefault("installed", []).extend(words[words.index("install") + 1 :])
    state_file.write_text(json.dumps(state), encoding="utf-8")
    return rc


if __name__ == "__main__":
    sys.exit(main())
