"""The stage catalogue and the preflight step's decisions (facts in → decision out, no SSH)."""

from __future__ import annotations

import pytest

from picluster.remote import Ok, ProbeOutput, StepError
from picluster.stages import STAGE_NAMES, select
from picluster.stages.preflight import CloudInitFinished


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


def decide(status: str, code: int, hostname: str = "node1") -> object:
    step = CloudInitFinished(expected_hostname="node1")
    facts = step.parse({"cloud_init": ProbeOutput(status + "\n", code), "hostname": ProbeOutput(hostname + "\n")},
                       frozenset())
    return step.decide(facts)


def test_preflight_is_ok_when_cloud_init_is_done_and_says_why() -> None:
    assert decide("done", 0) == Ok("cloud-init done; host answers as 'node1'")


def test_preflight_reports_a_hostname_the_os_stage_will_fix() -> None:
    decision = decide("done", 0, hostname="ubuntu")
    assert isinstance(decision, Ok) and "the os stage sets 'node1'" in decision.reason


def test_preflight_accepts_hosts_without_cloud_init() -> None:
    decision = decide("not-installed", 0)
    assert isinstance(decision, Ok) and decision.reason.startswith("cloud-init is not installed")


def test_preflight_fails_on_a_cloud_init_error_with_what_to_read() -> None:
    with pytest.raises(StepError, match=r"status 'error'.*/var/log/cloud-init.log"):
        decide("error", 1)


def test_preflight_wait_is_bounded() -> None:
    with pytest.raises(StepError, match="still running after 600s"):
        decide("running", 124)
    assert "timeout 600 cloud-init status --wait" in CloudInitFinished("node1").probes()["cloud_init"]
