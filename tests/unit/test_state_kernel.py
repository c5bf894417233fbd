"""Sysctl, KernelModule and CmdlineArgs: decisions from facts, and real runs against fake tools."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from picluster.remote import NEEDS_REBOOT, Change, Ok, ProbeOutput, StepError
from picluster.state import CmdlineArgs, KernelModule, Sysctl
from picluster.state.kernel import CmdlineFacts, PersistedFacts

if TYPE_CHECKING:
    from conftest import FakeTools, LocalShell

CONF = "/etc/sysctl.d/90-picluster.conf"
HOSTILE = "4096 'q' \"dq\" $(touch PWNED) `touch PWNED` ; é"


def test_sysctl_set_now_and_persisted_is_ok_and_says_why() -> None:
    step = Sysctl("net.ipv4.ip_forward", 1)
    facts = PersistedFacts("1", b"# managed\nnet.ipv4.ip_forward = 1\n")
    assert step.decide(facts) == Ok(f"sysctl net.ipv4.ip_forward is 1 (runtime and {CONF})")


def test_sysctl_runtime_whitespace_is_normalised() -> None:
    step = Sysctl("net.ipv4.tcp_rmem", "4096  87380 6291456")
    outputs = {"runtime": ProbeOutput("4096\t87380\t6291456\n"), "file": ProbeOutput("", 1)}
    assert step.parse(outputs, frozenset()) == PersistedFacts("4096 87380 6291456", None)


def test_sysctl_change_sets_the_runtime_value_and_rewrites_the_persisted_line() -> None:
    decision = Sysctl("net.ipv4.ip_forward", 1).decide(PersistedFacts("0", b"net.ipv4.ip_forward=0\nvm.x = 2\n"))
    assert isinstance(decision, Change)
    assert decision.commands[0].script == "sysctl -q -w -- net.ipv4.ip_forward=1"
    assert decision.diff.splitlines()[0] == "net.ipv4.ip_forward: 0 -> 1 (runtime)"
    assert "-net.ipv4.ip_forward=0" in decision.diff and "+net.ipv4.ip_forward = 1" in decision.diff


def test_sysctl_only_persisted_missing() -> None:
    decision = Sysctl("vm.swappiness", "10").decide(PersistedFacts("10", None))
    assert isinstance(decision, Change) and len(decision.commands) == 1
    assert decision.diff.startswith(f"--- /dev/null\n+++ {CONF}")


@pytest.mark.parametrize(("key", "value"), [("net.ipv4.ip_forward; reboot", "1"), ("$(id)", "1"), ("a.b", "1\n2")])
def test_sysctl_rejects_bad_keys_and_multiline_values(key: str, value: str) -> None:
    with pytest.raises(ValueError):
        Sysctl(key, value)


def test_sysctl_hostile_value_reaches_the_tool_and_the_file_intact(
    local: LocalShell, fake_tools: FakeTools, tmp_path: Path
) -> None:
    conf = tmp_path / "sysctl d" / "99 x.conf"
    conf.parent.mkdir()
    fake_tools.set(sysctl={"net.core.x": "0"})
    step = Sysctl("net.core.x", HOSTILE, file=str(conf))
    (result,) = local.apply([step])
    assert result.status == "changed", result
    assert fake_tools.get()["sysctl"]["net.core.x"] == HOSTILE
    assert ["sysctl", "-q", "-w", "--", f"net.core.x={HOSTILE}"] in fake_tools.calls()
    assert conf.read_text() == f"net.core.x = {HOSTILE}\n"
    assert not list(tmp_path.rglob("PWNED"))
    (again,) = local.apply([step])
    assert again.status == "ok", again


def test_kernel_module_loaded_and_listed_is_ok() -> None:
    step = KernelModule("br_netfilter")
    facts = PersistedFacts("loaded", b"overlay\nbr_netfilter\n")
    assert step.decide(facts) == Ok(
        "kernel module br_netfilter is loaded and listed in /etc/modules-load.d/picluster.conf"
    )


def test_kernel_module_probe_uses_sys_module_with_underscores() -> None:
    assert KernelModule("nf-conntrack").probes()["loaded"] == "test -d /sys/module/nf_conntrack"


def test_kernel_module_missing_is_loaded_and_persisted(
    local: LocalShell, fake_tools: FakeTools, tmp_path: Path
) -> None:
    conf = tmp_path / "modules.conf"
    conf.write_text("overlay\n")
    step = KernelModule("picluster_test_mod", file=str(conf))
    decision = step.decide(PersistedFacts(None, b"overlay\n"))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines()[0] == "load kernel module picluster_test_mod"
    (result,) = local.apply([step])
    assert result.status == "changed"
    assert fake_tools.calls() == [["modprobe", "--", "picluster_test_mod"]]
    assert conf.read_text() == "overlay\npicluster_test_mod\n"


@pytest.mark.parametrize("name", ["br netfilter", "$(id)", "a;b", ""])
def test_kernel_module_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError):
        KernelModule(name)


CMDLINE = b"console=serial0,115200 console=tty1 root=PARTUUID=738a4d67-02 rootfstype=ext4 rootwait\n"


def test_cmdline_with_the_arguments_is_ok() -> None:
    step = CmdlineArgs(["cgroup_memory=1", "cgroup_enable=memory"])
    facts = CmdlineFacts(CMDLINE.rstrip(b"\n") + b" cgroup_enable=memory cgroup_memory=1\n")
    assert step.decide(facts) == Ok("/boot/firmware/cmdline.txt has cgroup_memory=1 cgroup_enable=memory")


def test_cmdline_appends_missing_arguments_on_the_same_line_and_needs_a_reboot() -> None:
    decision = CmdlineArgs(["cgroup_memory=1", "rootwait"]).decide(CmdlineFacts(CMDLINE))
    assert isinstance(decision, Change)
    assert decision.sets == {NEEDS_REBOOT}
    assert decision.diff.endswith("+" + CMDLINE.decode().rstrip() + " cgroup_memory=1\n(reboot needed)")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"a\nb\n", "more than one line")],
)
def test_cmdline_refuses_what_it_cannot_fix(content: bytes | None, message: str) -> None:
    with pytest.raises(StepError, match=message):
        CmdlineArgs("x=1").decide(CmdlineFacts(content))


@pytest.mark.parametrize("arg", ["a b", "a\nb", ""])
def test_cmdline_arguments_are_single_words(arg: str) -> None:
    with pytest.raises(ValueError):
        CmdlineArgs(arg)


def test_cmdline_hostile_argument_written_verbatim(local: LocalShell, tmp_path: Path) -> None:
    path = tmp_path / "cmdline.txt"
    path.write_bytes(CMDLINE)
    arg = "x=\"$(touch${IFS}PWNED)\"'`id`'é"
    (result,) = local.apply([CmdlineArgs([arg, "cgroup_memory=1"], path=str(path))])
    assert result.status == "changed"
    assert path.read_text() == CMDLINE.decode().rstrip() + f" {arg} cgroup_memory=1\n"
    assert not list(tmp_path.rglob("PWNED"))
    assert local.run.marks == {NEEDS_REBOOT}
