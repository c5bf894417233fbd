"""Service: decisions from systemctl facts and the run's marks, and the order of commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from picluster.remote import UNITS_CHANGED, Change, Ok, ProbeOutput, changed_mark
from picluster.state import File, Service
from picluster.state.systemd import ServiceFacts

if TYPE_CHECKING:
    from conftest import FakeTools, LocalShell


def facts(enabled: str = "enabled", active: str = "active", units: bool = False, restart: bool = False) -> ServiceFacts:
    return ServiceFacts(enabled, enabled in ("enabled", "static"), active, units, restart)


def scripts(decision: object) -> list[str]:
    assert isinstance(decision, Change)
    return [c.script for c in decision.commands]


def test_enabled_and_running_is_ok_and_says_so() -> None:
    assert Service("ssh", enabled=True, running=True).decide(facts()) == Ok("service ssh is enabled and active")


def test_parse_reads_exit_codes_and_marks() -> None:
    step = Service("k3s", restart_on=["/etc/rancher/k3s/config.yaml"])
    outputs = {"enabled": ProbeOutput("disabled\n", 1), "active": ProbeOutput("inactive\n", 3)}
    marks = frozenset({UNITS_CHANGED, changed_mark("/etc/rancher/k3s/config.yaml")})
    assert step.parse(outputs, marks) == ServiceFacts("disabled", False, "inactive", True, True)
    assert step.parse({"enabled": ProbeOutput("", 1), "active": ProbeOutput("", 3)}, frozenset()).enabled_state == (
        "not-found"
    )


START_K3S = ("systemctl start -- k3s && { systemctl is-active --quiet -- k3s || "
             "{ echo 'k3s did not stay active after start:' >&2; systemctl status --no-pager --lines=5 -- k3s >&2; "
             "exit 1; }; }")


def test_a_start_that_does_not_take_fails(local: LocalShell, fake_tools: FakeTools) -> None:
    """A unit whose Condition*= fails: systemctl start exits 0 but the unit stays inactive."""
    fake_tools.set(units={"chrony.service": {"enabled": "enabled", "active": "inactive"}})
    (result,) = local.apply([Service("chrony.service", running=True)])
    assert result.status == "changed"  # the fake's start activates it: the check passes
    fake_tools.set(units={"chrony.service": {"enabled": "enabled", "active": "inactive"}}, start_noop=True)
    (result,) = local.apply([Service("chrony.service", running=True)])
    assert result.status == "failed" and result.error is not None
    assert "chrony.service did not stay active after start:" in result.error.stderr_tail


def test_disabled_and_stopped_is_enabled_then_started() -> None:
    decision = Service("k3s", enabled=True, running=True).decide(facts("disabled", "inactive"))
    assert scripts(decision) == ["systemctl enable -- k3s", START_K3S]
    assert isinstance(decision, Change) and decision.diff == "enable k3s (is disabled)\nstart k3s (is inactive)"


def test_unit_files_changed_reload_first_and_clear_the_mark() -> None:
    decision = Service("k3s", enabled=True, running=True).decide(facts(units=True))
    assert scripts(decision) == ["systemctl daemon-reload"]
    assert isinstance(decision, Change) and decision.clears == {UNITS_CHANGED}


def test_a_changed_config_restarts_a_running_unit_only() -> None:
    step = Service("k3s", running=True, restart_on=["/etc/rancher/k3s/config.yaml"])
    assert scripts(step.decide(facts(restart=True))) == ["systemctl restart -- k3s"]
    assert scripts(step.decide(facts(active="inactive", restart=True))) == [START_K3S]


def test_stop_and_disable() -> None:
    step = Service("avahi-daemon", enabled=False, running=False)
    assert scripts(step.decide(facts())) == ["systemctl disable -- avahi-daemon", "systemctl stop -- avahi-daemon"]
    assert step.decide(facts("static", "inactive")) == Ok("service avahi-daemon is static and inactive")


def test_unmanaged_means_untouched() -> None:
    assert isinstance(Service("x").decide(facts("disabled", "failed")), Ok)


def test_hostile_unit_names_are_quoted() -> None:
    step = Service("a b;$(reboot)", enabled=True)
    assert step.probes()["enabled"] == "systemctl is-enabled -- 'a b;$(reboot)'"


def test_a_file_change_earlier_in_the_run_restarts_the_service(
    local: LocalShell, fake_tools: FakeTools, tmp_path: Path, me: tuple[str, str]
) -> None:
    config = tmp_path / "config.yaml"
    fake_tools.set(units={"k3s": {"enabled": "enabled", "active": "active"}})
    steps = [
        File(str(config), "write-kubeconfig-mode: '0600'\n", owner=me[0], group=me[1]),
        Service("k3s", enabled=True, running=True, restart_on=[str(config)]),
    ]
    assert [r.status for r in local.apply(steps)] == ["changed", "changed"]
    assert fake_tools.calls()[-1] == ["systemctl", "restart", "--", "k3s"]
    local.run.marks.clear()  # a new run
    second = local.apply(steps)
    assert [r.status for r in second] == ["ok", "ok"], second
