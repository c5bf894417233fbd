"""Kernel settings: sysctl values, kernel modules, and arguments on the Pi's kernel command line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import NEEDS_REBOOT, Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.state._fs import (
    as_bytes,
    as_text,
    content_probe,
    parse_content,
    q,
    single_line,
    text_diff,
    write_command,
)
from picluster.state.files import content_marks, edit_lines

SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
CMDLINE = "/boot/firmware/cmdline.txt"


@dataclass(frozen=True)
class PersistedFacts:
    """A runtime state (a value, or whether a module is loaded) and the bytes of the file persisting it."""

    runtime: str | None
    persisted: bytes | None


def _persist(path: str, old: bytes | None, new: str) -> tuple[str, Command]:
    """Return the diff and the command that writes `new` text over `path` (created 0644 root)."""
    data = as_bytes(new)
    if old is None:
        write = write_command(path, data, mode=0o644, owner="root", group="root")
    else:
        write = write_command(path, data, mode=None, owner=None, group=None)
    return text_diff(path, old, data), write


class Sysctl:
    """Ensure a kernel parameter has this value now (`sysctl -w`) and after boot (a sysctl.d file).

    Example: ``Sysctl("net.ipv4.ip_forward", "1")``
    """

    def __init__(self, key: str, value: str | int, *, file: str = "/etc/sysctl.d/90-picluster.conf") -> None:
        if not SYSCTL_KEY.match(key):
            raise ValueError(f"not a sysctl key: {key!r}")
        self.key = key
        self.value = " ".join(single_line(str(value), f"sysctl {key}").split())
        self.file = file
        self.pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"sysctl {self.key}"

    def probes(self) -> Mapping[str, str]:
        """Read the runtime value and the persisting file."""
        return {"runtime": f"sysctl -n -- {q(self.key)}", "file": content_probe(self.file)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> PersistedFacts:
        """Normalise whitespace in the runtime value (sysctl separates numbers with tabs)."""
        runtime = outputs["runtime"]
        value = " ".join(runtime.stdout.split()) if runtime.ok else None
        return PersistedFacts(value, parse_content(outputs["file"], self.file))

    def decide(self, facts: PersistedFacts) -> Decision:
        """Compare the runtime value and the persisted line."""
        line = f"{self.key} = {self.value}"
        diff: list[str] = []
        commands: list[Command] = []
        sets: frozenset[str] = frozenset()
        if facts.runtime != self.value:
            diff.append(f"{self.key}: {facts.runtime} -> {self.value} (runtime)")
            commands.append(Command(f"sysctl -q -w -- {q(f'{self.key}={self.value}')}"))
        new = edit_lines(as_text(facts.persisted or b""), line, self.pattern, present=True)
        if new is not None:
            text, write = _persist(self.file, facts.persisted, new)
            diff.append(text)
            commands.append(write)
            sets = content_marks(self.file)
        if not commands:
            return Ok(f"sysctl {self.key} is {self.value} (runtime and {self.file})")
        return Change("\n".join(diff), commands, sets=sets)


class KernelModule:
    """Ensure a kernel module is loaded now (modprobe) and at boot (a modules-load.d file).

    Example: ``KernelModule("br_netfilter")``
    """

    def __init__(self, module: str, *, file: str = "/etc/modules-load.d/picluster.conf") -> None:
        if not MODULE.match(module):
            raise ValueError(f"not a kernel module name: {module!r}")
        self.module = module
        self.file = file
        self.pattern = re.compile(r"^\s*" + re.escape(module) + r"\s*$")

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"kernel module {self.module}"

    def probes(self) -> Mapping[str, str]:
        """Check /sys/module (loaded or built in) and read the persisting file."""
        return {
            "loaded": f"test -d {q('/sys/module/' + self.module.replace('-', '_'))}",
            "file": content_probe(self.file),
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> PersistedFacts:
        """Type the probe outputs."""
        loaded = "loaded" if outputs["loaded"].ok else None
        return PersistedFacts(loaded, parse_content(outputs["file"], self.file))

    def decide(self, facts: PersistedFacts) -> Decision:
        """Load and persist what is missing."""
        diff: list[str] = []
        commands: list[Command] = []
        if facts.runtime is None:
            diff.append(f"load kernel module {self.module}")
            commands.append(Command(f"modprobe -- {q(self.module)}"))
        new = edit_lines(as_text(facts.persisted or b""), self.module, self.pattern, present=True)
        if new is not None:
            text, write = _persist(self.file, facts.persisted, new)
            diff.append(text)
            commands.append(write)
        if not commands:
            return Ok(f"kernel module {self.module} is loaded and listed in {self.file}")
        return Change("\n".join(diff), commands)


@dataclass(frozen=True)
class CmdlineFacts:
    """The bytes of the kernel command line file, None when missing."""

    content: bytes | None


class CmdlineArgs:
    """Ensure arguments are on the kernel command line (a one-line file); a change needs a reboot.

    Example: ``CmdlineArgs(["cgroup_memory=1", "cgroup_enable=memory"])``
    """

    def __init__(self, args: str | Sequence[str], *, path: str = CMDLINE) -> None:
        self.args = [args] if isinstance(args, str) else list(args)
        bad = [a for a in self.args if not a or re.search(r"\s", a)]
        if bad or not self.args:
            raise ValueError(f"kernel arguments must be non-empty words without spaces: {bad or self.args!r}")
        self.path = path

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"kernel cmdline {' '.join(self.args)}"

    def probes(self) -> Mapping[str, str]:
        """Read the file."""
        return {"content": content_probe(self.path)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> CmdlineFacts:
        """Type the probe output."""
        return CmdlineFacts(parse_content(outputs["content"], self.path))

    def decide(self, facts: CmdlineFacts) -> Decision:
        """Append the missing arguments to the single line."""
        if facts.content is None:
            raise StepError(f"{self.path} does not exist: is this a Raspberry Pi boot layout?")
        text = as_text(facts.content)
        if text.rstrip("\n").count("\n"):
            raise StepError(f"{self.path} has more than one line; the kernel reads only the first: fix it")
        words = text.split()
        missing = [a for a in self.args if a not in words]
        if not missing:
            return Ok(f"{self.path} has {' '.join(self.args)}")
        data = as_bytes(" ".join([*words, *missing]) + "\n")
        return Change(
            text_diff(self.path, facts.content, data) + "\n(reboot needed)",
            [write_command(self.path, data, mode=None, owner=None, group=None)],
            sets=frozenset({NEEDS_REBOOT}),
        )
