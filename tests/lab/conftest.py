"""The lab fixture: the nodes of the lab inventory, brought up once per session by `Lab.up`.

Tests that need running nodes take `running_lab` (it brings the lab back up if a test took it down);
the session ends with `Lab.down`. Linux and root only: elsewhere the lab tests are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from lab_support import LAB_SKIP, lab_inventory


@pytest.fixture(scope="session")
def lab_session() -> Iterator[object]:
    if LAB_SKIP:
        pytest.skip(LAB_SKIP)
    from picluster.lab import Lab

    lab = Lab(lab_inventory())
    started = time.monotonic()
    lab.up()
    print(f"\nlab up in {time.monotonic() - started:.1f}s")
    yield lab
    lab.down()


@pytest.fixture
def running_lab(lab_session: object) -> object:
    lab_session.up()  # type: ignore[attr-defined]  # a no-op while it runs
    return lab_session
