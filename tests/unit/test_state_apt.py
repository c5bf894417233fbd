"""Apt: decisions from dpkg facts, and at most one `apt-get update` per host per run."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from picluster.remote import APT_UPDATED, Change, Ok, ProbeOutput
from picluster.state import Apt
from picluster.state.apt import AptFacts

if TYPE_CHECKING:
    from conftest import FakeTools, LocalShell


def test_installed_packages_are_ok_and_say_so() -> None:
    step = Apt(["nfs-common", "open-iscsi"])
    facts = AptFacts(frozenset({"nfs-common", "open-iscsi"}), updated=False)
    assert step.decide(facts) == Ok("packages installed: nfs-common open-iscsi")


def test_dpkg_output_counts_only_installed_packages() -> None:
    step = Apt(["aa", "bb", "cc"])
    out = ProbeOutput("aa installed\nbb config-files\n", exit_code=1)
    assert step.parse({"dpkg": out}, frozenset()) == AptFacts(frozenset({"aa"}), False)
    assert step.parse({"dpkg": out}, frozenset({APT_UPDATED})).updated


def test_missing_packages_update_once_then_install_noninteractively() -> None:
    step = Apt(["nfs-common", "open-iscsi"])
    decision = step.decide(AptFacts(frozenset({"nfs-common"}), updated=False))
    assert isinstance(decision, Change)
    assert decision.diff == "+ package open-iscsi"
    update, install = (c.script for c in decision.commands)
    assert update.startswith("DEBIAN_FRONTEND=noninteractive apt-get") and update.endswith(" update")
    assert install.startswith("DEBIAN_FRONTEND=noninteractive apt-get")
    assert install.endswith("--no-install-recommends install open-iscsi")
    assert decision.sets == {APT_UPDATED}
    already = step.decide(AptFacts(frozenset(), updated=True))
    assert isinstance(already, Change) and [c.script.split()[-3] for c in already.commands] == ["install"]


def test_absent_packages_are_removed() -> None:
    step = Apt("snapd", present=False)
    assert step.decide(AptFacts(frozenset(), False)) == Ok("packages absent: snapd")
    decision = step.decide(AptFacts(frozenset({"snapd"}), False))
    assert isinstance(decision, Change) and decision.commands[0].script.endswith(" remove snapd")


@pytest.mark.parametrize("name", ["", "-y", "a b", "x;reboot", "$(id)", "Ab"])
def test_package_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="not Debian package names"):
        Apt([name])


def test_one_update_per_host_per_run(local: LocalShell, fake_tools: FakeTools) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("needs dpkg-query (Debian)")
    steps = [Apt("picluster-missing-one"), Apt(["dpkg", "picluster-missing-two"])]
    results = local.apply(steps)
    assert [r.status for r in results] == ["changed", "changed"], results
    calls = fake_tools.calls()
    assert sum("update" in call for call in calls) == 1
    assert fake_tools.get()["installed"] == ["picluster-missing-one", "picluster-missing-two"]
    (ok,) = local.apply([Apt("dpkg")])
    assert ok.reason == "packages installed: dpkg"
