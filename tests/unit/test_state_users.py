"""User: decisions from getent/id facts, and a real useradd/usermod with a hostile shell (as root)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from picluster.remote import Change, Ok, ProbeOutput
from picluster.state import User
from picluster.state.users import UserFacts

if TYPE_CHECKING:
    from conftest import LocalShell


def test_existing_user_with_shell_and_groups_is_ok() -> None:
    step = User("pi", groups=["sudo", "adm"], login_shell="/bin/bash")
    facts = UserFacts(True, "/bin/bash", frozenset({"pi", "adm", "sudo", "video"}))
    assert step.decide(facts) == Ok("user pi exists, shell /bin/bash, in groups sudo,adm")


def test_parse() -> None:
    outputs = {"passwd": ProbeOutput("pi:x:1000:1000:,,,:/home/pi:/bin/bash\n"), "groups": ProbeOutput("pi adm\n")}
    assert User("pi").parse(outputs, frozenset()) == UserFacts(True, "/bin/bash", frozenset({"pi", "adm"}))
    missing = {"passwd": ProbeOutput("", 2), "groups": ProbeOutput("", 1)}
    assert User("pi").parse(missing, frozenset()) == UserFacts(False)


def test_missing_user_is_created() -> None:
    decision = User("pi", groups=["sudo"], login_shell="/bin/bash").decide(UserFacts(False))
    assert isinstance(decision, Change)
    assert [c.script for c in decision.commands] == [
        "useradd --create-home --shell /bin/bash --groups sudo -- pi"
    ]


def test_shell_and_missing_groups_are_fixed_without_dropping_others() -> None:
    decision = User("pi", groups=["sudo", "adm"], login_shell="/bin/bash").decide(
        UserFacts(True, "/bin/sh", frozenset({"pi", "adm"}))
    )
    assert isinstance(decision, Change)
    assert decision.diff == "shell of pi: /bin/sh -> /bin/bash\nadd pi to groups sudo"
    assert [c.script for c in decision.commands] == [
        "usermod --shell /bin/bash -- pi",
        "usermod --append --groups sudo -- pi",
    ]


@pytest.mark.parametrize(
    ("name", "groups", "shell"),
    [("Pi", [], None), ("a b", [], None), ("pi", ["$(id)"], None), ("pi", [], "/bin/sh:x"), ("pi", [], "a\nb")],
)
def test_bad_names_and_shells_are_refused(name: str, groups: list[str], shell: str | None) -> None:
    with pytest.raises(ValueError):
        User(name, groups=groups, login_shell=shell)


def test_a_real_user_with_a_hostile_shell(local: LocalShell) -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creates a real user: needs root and useradd")
    name = "pict" + secrets.token_hex(4)
    shell = "/bin/we ird 'q' \"dq\" $(touch /PWNED) `id` é"
    try:
        first = local.apply([User(name, groups=["adm"], login_shell=shell)])
        assert first[0].status == "changed", first
        entry = subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True).stdout
        assert entry.rstrip("\n").split(":")[6] == shell
        assert not os.path.exists("/PWNED")
        (again,) = local.apply([User(name, groups=["adm"], login_shell=shell)])
        assert again.reason == f"user {name} exists, shell {shell}, in groups adm"
        (more,) = local.apply([User(name, groups=["users"], login_shell="/bin/sh")])
        assert more.status == "changed", more
        groups = subprocess.run(["id", "-nG", name], capture_output=True, text=True, check=True).stdout.split()
        assert {"adm", "users"} <= set(groups)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
