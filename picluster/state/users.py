"""Local users: exist, with a login shell and membership of groups."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import q

NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class UserFacts:
    """The user's shell and groups; `exists` False when there is no such user."""

    exists: bool
    shell: str = ""
    groups: frozenset[str] = frozenset()


class User:
    """Ensure a user exists, with this shell (None: unmanaged) and at least these groups.

    Example: ``User("pi", groups=["sudo", "adm"], login_shell="/bin/bash")``
    """

    def __init__(self, user: str, *, groups: Sequence[str] = (), login_shell: str | None = None) -> None:
        bad = [n for n in (user, *groups) if not NAME.match(n)]
        if bad:
            raise ValueError(f"not user or group names: {bad!r}")
        if login_shell is not None and re.search(r"[:\n\r]", login_shell):
            raise ValueError(f"a login shell cannot contain ':' or a line break: {login_shell!r}")
        self.user = user
        self.groups = list(groups)
        self.shell = login_shell

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"user {self.user}"

    def probes(self) -> Mapping[str, str]:
        """Read the passwd entry and the groups."""
        return {"passwd": f"getent passwd {q(self.user)}", "groups": f"id -nG {q(self.user)}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> UserFacts:
        """Type the probe outputs."""
        passwd = outputs["passwd"]
        if not passwd.ok or not passwd.stdout.strip():
            return UserFacts(exists=False)
        shell = passwd.stdout.strip().split(":")[6]
        return UserFacts(True, shell, frozenset(outputs["groups"].stdout.split()))

    def decide(self, facts: UserFacts) -> Decision:
        """Create the user, or fix its shell and groups."""
        user = q(self.user)
        groups = ",".join(self.groups)
        if not facts.exists:
            args = ["useradd", "--create-home"]
            if self.shell is not None:
                args += ["--shell", q(self.shell)]
            if groups:
                args += ["--groups", q(groups)]
            return Change(f"create user {self.user}", [Command(" ".join([*args, "--", user]))])
        diff: list[str] = []
        commands: list[Command] = []
        if self.shell is not None and facts.shell != self.shell:
            diff.append(f"shell of {self.user}: {facts.shell} -> {self.shell}")
            commands.append(Command(f"usermod --shell {q(self.shell)} -- {user}"))
        missing = [g for g in self.groups if g not in facts.groups]
        if missing:
            diff.append(f"add {self.user} to groups {', '.join(missing)}")
            commands.append(Command(f"usermod --append --groups {q(','.join(missing))} -- {user}"))
        if not commands:
            shell = f", shell {facts.shell}" if self.shell is not None else ""
            in_groups = f", in groups {groups}" if groups else ""
            return Ok(f"user {self.user} exists{shell}{in_groups}")
        return Change("\n".join(diff), commands)
