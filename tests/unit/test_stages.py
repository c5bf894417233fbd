"""The stage catalogue: order, --only and --from."""

from __future__ import annotations

import pytest

from picluster.stages import STAGE_NAMES, select


def test_stages_run_in_the_reference_order() -> None:
    assert STAGE_NAMES == ("os", "gateway", "k3s", "apps")
    assert [s.name for s in select()] == ["os", "gateway", "k3s", "apps"]


def test_only_and_from_narrow_the_stages() -> None:
    assert [s.name for s in select(only=["k3s", "os"])] == ["os", "k3s"]
    assert [s.name for s in select(start="k3s")] == ["k3s", "apps"]
    assert [s.name for s in select(only=["os", "apps"], start="gateway")] == ["apps"]


@pytest.mark.parametrize(("only", "start"), [(["osx"], None), (None, "nope")])
def test_unknown_stage_names_the_known_ones(only: list[str] | None, start: str | None) -> None:
    with pytest.raises(ValueError, match="stages are os, gateway, k3s, apps"):
        select(only=only, start=start)
