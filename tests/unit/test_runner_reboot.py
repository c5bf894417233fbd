"""Reboot and reconnect in the runner: a step that schedules a reboot is followed by a bounded wait for a
new boot id, and the later steps run on the new connection (run on a real local shell; the lab reboots for real)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from invoke.context import Context

from picluster.remote import Change, Command, Decision, HostRun, Ok, ProbeOutput, run_steps
from picluster.remote.reboot import NotBack, rebooting_mark, wait_new_boot


class Schedules:
    """A step whose change 'schedules a reboot' from boot `old`."""

    name = "schedule a reboot"

    def probes(self) -> Mapping[str, str]:
        return {}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> None:
        return None

    def decide(self, facts: None) -> Decision:
        return Change("reboot", [Command("true")], sets=frozenset({rebooting_mark("old-boot")}))


class Says:
    """A step that reports which shell it ran on (the environment variable the context sets)."""

    def __init__(self, label: str) -> None:
        self.name = label

    def probes(self) -> Mapping[str, str]:
        return {"shell": 'printf %s "${WHICH_SHELL:-first}"'}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> str:
        return outputs["shell"].stdout

    def decide(self, facts: str) -> Decision:
        return Ok(f"ran on the {facts} shell")


def second_shell() -> Context:
    ctx = Context()
    ctx.config.run.env = {"WHICH_SHELL": "second"}
    return ctx


def test_the_steps_after_a_reboot_run_on_the_new_connection() -> None:
    asked: list[str] = []

    def reboot(old: str) -> Context:
        asked.append(old)
        return second_shell()

    results = run_steps(Context(), [Says("before"), Schedules(), Says("after")], sudo=False, dry_run=False,
                        run=HostRun(), reboot=reboot)
    assert asked == ["old-boot"]
    assert [(r.name, r.status) for r in results] == [
        ("before", "ok"), ("schedule a reboot", "changed"), ("wait for the reboot", "ok"), ("after", "ok")]
    assert results[0].reason == "ran on the first shell" and results[-1].reason == "ran on the second shell"
    assert results[2].reason.startswith("back after ")


def test_a_host_that_does_not_come_back_fails_the_wait_and_stops_the_host() -> None:
    def reboot(old: str) -> Context:
        raise NotBack("node3 did not come back within 600s after its reboot")

    run = HostRun()
    results = run_steps(Context(), [Schedules(), Says("after")], sudo=False, dry_run=False, run=run, reboot=reboot)
    assert [(r.name, r.status) for r in results] == [("schedule a reboot", "changed"),
                                                     ("wait for the reboot", "failed")]
    assert results[-1].message == "node3 did not come back within 600s after its reboot; then run the stage again"
    assert run.marks == set()


def test_a_dry_run_neither_reboots_nor_waits() -> None:
    def reboot(old: str) -> Context:
        raise AssertionError("a dry run must not wait for a reboot")

    results = run_steps(Context(), [Schedules(), Says("after")], sudo=False, dry_run=True, run=HostRun(),
                        reboot=reboot)
    assert [(r.name, r.status) for r in results] == [("schedule a reboot", "changed"), ("after", "ok")]


@dataclass
class FakeClock:
    """A clock the wait's sleeps advance, so the bound is tested without waiting for it."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_returns_at_the_first_new_boot_id(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("picluster.remote.reboot.time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    answers = iter([None, "old", None, "new"])

    @dataclass
    class Host:
        name: str = "node1"
        ssh: object = None

    took = wait_new_boot(Host(), "old", wait_s=600, poll_s=2, reader=lambda h, t: next(answers), clock=clock)
    assert took == 6.0


def test_the_wait_is_bounded_and_says_which_host(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("picluster.remote.reboot.time.sleep", lambda s: setattr(clock, "now", clock.now + s))
    asked: list[float] = []

    @dataclass
    class Host:
        name: str = "node3"
        ssh: object = None

    def same(host: object, timeout: float) -> str:
        asked.append(clock.now)
        return "old"

    with pytest.raises(NotBack, match=r"^node3 did not come back within 30s after its reboot"):
        wait_new_boot(Host(), "old", wait_s=30, poll_s=1, reader=same, clock=clock)
    assert clock.now == 30 and len(asked) == 31
