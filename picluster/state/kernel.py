"""Kernel settings: sysctl values, kernel modules, and arguments on the Pi's kernel command line."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import NEEDS_REBOOT, Change, Command, Decision, Ok, ProbeOutput, StepError
from picluster.state._fs import (
    as_bytes,
    as_text,
    content_probe,
    parse_content,
    q,
    rewrite_command,
    single_line,
    text_diff,
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


Entry = tuple[str, re.Pattern[str]]   # a line of a persisting file, and the pattern of the lines it replaces


def sysctl_value(key: str, value: str | int) -> str:
    """Return `value` as sysctl prints it: one line, its words separated by single spaces."""
    return " ".join(single_line(str(value), f"sysctl {key}").split())


def sysctl_probe(key: str) -> str:
    """Return the probe that prints the key's runtime value."""
    return f"sysctl -n -- {q(key)}"


def sysctl_runtime(out: ProbeOutput) -> str | None:
    """Return the runtime value with whitespace normalised (sysctl separates numbers with tabs), None if unreadable."""
    return " ".join(out.stdout.split()) if out.ok else None


def sysctl_set(key: str, value: str) -> Command:
    """Return the command that sets the runtime value."""
    return Command(f"sysctl -q -w -- {q(f'{key}={value}')}")


def sysctl_entry(key: str, value: str) -> Entry:
    """Return the sysctl.d line for the key, replacing any line that sets it."""
    return f"{key} = {value}", re.compile(r"^\s*" + re.escape(key) + r"\s*=")


def module_probe(module: str) -> str:
    """Return the probe that succeeds when the module is loaded or built in."""
    return f"test -d {q('/sys/module/' + module.replace('-', '_'))}"


def module_load(module: str) -> Command:
    """Return the command that loads the module."""
    return Command(f"modprobe -- {q(module)}")


def module_entry(module: str) -> Entry:
    """Return the modules-load.d line for the module."""
    return module, re.compile(r"^\s*" + re.escape(module) + r"\s*$")


def persist(path: str, old: bytes | None, entries: Iterable[Entry]) -> tuple[str, Command] | None:
    """Return the diff and the write that put every entry into `path` (a new file is 0644 root), or None
    when it holds them all already."""
    text = as_text(old or b"")
    for line, pattern in entries:
        text = edit_lines(text, line, pattern, present=True) or text
    data = as_bytes(text)
    if data == (old or b""):
        return None
    return text_diff(path, old, data), rewrite_command(path, old, data)


class Sysctl:
    """Ensure a kernel parameter has this value now (`sysctl -w`) and after boot (a sysctl.d file).

    Example: ``Sysctl("net.ipv4.ip_forward", "1")``
    """

    def __init__(self, key: str, value: str | int, *, file: str = "/etc/sysctl.d/90-picluster.conf") -> None:
        if not SYSCTL_KEY.match(key):
            raise ValueError(f"not a sysctl key: {key!r}")
        self.key = key
        self.value = sysctl_value(key, value)
        self.file = file

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"sysctl {self.key}"

    def probes(self) -> Mapping[str, str]:
        """Read the runtime value and the persisting file."""
        return {"runtime": sysctl_probe(self.key), "file": content_probe(self.file)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> PersistedFacts:
        """Type the outputs."""
        return PersistedFacts(sysctl_runtime(outputs["runtime"]), parse_content(outputs["file"], self.file))

    def decide(self, facts: PersistedFacts) -> Decision:
        """Compare the runtime value and the persisted line."""
        diff: list[str] = []
        commands: list[Command] = []
        if facts.runtime != self.value:
            diff.append(f"{self.key}: {facts.runtime} -> {self.value} (runtime)")
            commands.append(sysctl_set(self.key, self.value))
        written = persist(self.file, facts.persisted, [sysctl_entry(self.key, self.value)])
        if written is not None:
            diff.append(written[0])
            commands.append(written[1])
        if not commands:
            return Ok(f"sysctl {self.key} is {self.value} (runtime and {self.file})")
        return Change("\n".join(diff), commands, sets=content_marks(self.file) if written else frozenset())


class KernelModule:
    """Ensure a kernel module is loaded now (modprobe) and at boot (a modules-load.d file).

    Example: ``KernelModule("br_netfilter")``
    """

    def __init__(self, module: str, *, file: str = "/etc/modules-load.d/picluster.conf") -> None:
        if not MODULE.match(module):
            raise ValueError(f"not a kernel module name: {module!r}")
        self.module = module
        self.file = file

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"kernel module {self.module}"

    def probes(self) -> Mapping[str, str]:
        """Check /sys/module (loaded or built in) and read the persisting file."""
        return {"loaded": module_probe(self.module), "file": content_probe(self.file)}

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
            commands.append(module_load(self.module))
        written = persist(self.file, facts.persisted, [module_entry(self.module)])
        if written is not None:
            diff.append(written[0])
            commands.append(written[1])
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
            [rewrite_command(self.path, facts.content, data)],
            sets=frozenset({NEEDS_REBOOT}),
        )
