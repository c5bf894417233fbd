"""How fast each loader refuses each hostile file (target: under 1 s each), beside a plain yaml.safe_load.

    python benchmarks/hostile_files.py

Prints, per case, the seconds picluster's inventory, versions and releases loaders take to refuse the file,
and the ratio to the 1 s target. The baseline column is PyYAML's own safe_load of the same bytes, bounded
(an alias bomb or deep nesting is where it blows up or takes long).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "unit"))
TARGET_S = 1.0
BASELINE_BOUND_S = 20.0


def _safe_load(content: bytes) -> None:
    import yaml

    try:
        yaml.safe_load(content)
    except Exception:
        pass


def baseline(content: bytes) -> float | None:
    """Seconds yaml.safe_load takes, None when it did not finish within the bound."""
    proc = multiprocessing.Process(target=_safe_load, args=(content,))
    start = time.monotonic()
    proc.start()
    proc.join(BASELINE_BOUND_S)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return time.monotonic() - start


def main() -> None:
    """Print the table."""
    from yaml_support import HOSTILE

    from picluster.inventory import InventoryError, load_inventory
    from picluster.stages.apps.spec import SpecError, load_releases
    from picluster.versions import VersionsError, load_versions

    loaders = {"inventory": (load_inventory, InventoryError), "versions": (load_versions, VersionsError),
               "releases": (load_releases, SpecError)}
    worst = 0.0
    print(f"{'case':<22} {'inventory':>10} {'versions':>10} {'releases':>10} {'safe_load':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (content, _) in HOSTILE.items():
            row = []
            for kind, (load, error) in loaders.items():
                path = Path(tmp) / f"{kind}.yml"
                path.write_bytes(content)
                start = time.monotonic()
                try:
                    load(path)
                except error:
                    pass
                took = time.monotonic() - start
                worst = max(worst, took)
                row.append(f"{took:>9.3f}s")
            base = baseline(content)
            row.append(f"{base:>9.3f}s" if base is not None else f">{BASELINE_BOUND_S:>8.0f}s")
            print(f"{name:<22} " + " ".join(row))
    print(f"worst {worst:.3f}s against the {TARGET_S:.0f} s target: {worst / TARGET_S:.2f}x")


if __name__ == "__main__":
    main()
