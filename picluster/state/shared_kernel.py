"""Kernel modules and sysctls on a host that may not own its kernel (a container shares its host's).

Each step handles a set of modules (or sysctls) and the one file that persists them, in a single read,
so several settings that share a file never overwrite each other. Where the host is a container
(`systemd-detect-virt --container`), loading a module, or writing a sysctl that is read-only there,
is impossible: the setting is still persisted, and the runtime part is reported as an explicit skip,
decided from the host's facts, never from a lab flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import content_probe, parse_content, q
from picluster.state.files import content_marks
from picluster.state.kernel import (
    MODULE,
    SYSCTL_KEY,
    module_entry,
    module_load,
    module_probe,
    persist,
    sysctl_entry,
    sysctl_probe,
    sysctl_runtime,
    sysctl_set,
    sysctl_value,
)
from picluster.state.skip import SKIPPED

VIRT = "systemd-detect-virt --container"
MODULES_FILE = "/etc/modules-load.d/picluster.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-picluster.conf"


@dataclass(frozen=True)
class SharedKernelFacts:
    """Per setting its runtime state (None: unloaded/unreadable) and writability; the file; the container."""

    runtime: tuple[str | None, ...]
    writable: tuple[bool, ...]
    persisted: bytes | None
    container: str


def _container(outputs: Mapping[str, ProbeOutput]) -> str:
    out = outputs["virt"]
    return out.stdout.strip() if out.ok else ""


def _decision(diff: list[str], commands: list[Command], skips: list[str], sets: frozenset[str], ok: str) -> Decision:
    if not commands:
        return Ok(SKIPPED + "; ".join(skips) + f"; {ok}") if skips else Ok(ok)
    if skips:
        diff.append("(skipped: " + "; ".join(skips) + ")")
    return Change("\n".join(diff), commands, sets=sets)


class ModulesLoaded:
    """Ensure kernel modules are loaded now (modprobe) and at boot (one modules-load.d file).

    In a container, a module the host's kernel has not loaded is persisted and its load skipped.

    Example: ``ModulesLoaded(["br_netfilter", "overlay"])``
    """

    def __init__(self, modules: Sequence[str], *, file: str = MODULES_FILE) -> None:
        bad = [m for m in modules if not MODULE.match(m)]
        if bad or not modules:
            raise ValueError(f"not kernel module names: {bad or list(modules)!r}")
        self.modules = list(modules)
        self.file = file

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"kernel modules {' '.join(self.modules)}"

    def probes(self) -> Mapping[str, str]:
        """Check /sys/module for each (loaded or built in), read the file and the container type."""
        probes = {f"loaded.{i}": module_probe(m) for i, m in enumerate(self.modules)}
        return {**probes, "file": content_probe(self.file), "virt": VIRT}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SharedKernelFacts:
        """Type the outputs."""
        loaded = tuple("loaded" if outputs[f"loaded.{i}"].ok else None for i in range(len(self.modules)))
        return SharedKernelFacts(loaded, (True,) * len(self.modules), parse_content(outputs["file"], self.file),
                                 _container(outputs))

    def decide(self, facts: SharedKernelFacts) -> Decision:
        """Load what is not loaded (or skip that in a container), list every module in the file."""
        diff: list[str] = []
        commands: list[Command] = []
        skips: list[str] = []
        for module, runtime in zip(self.modules, facts.runtime, strict=True):
            if runtime is not None:
                continue
            if facts.container:
                skips.append(f"load {module}: this host is a container ({facts.container}) sharing its host's "
                             "kernel, where modprobe is not possible")
                continue
            diff.append(f"load kernel module {module}")
            commands.append(module_load(module))
        written = persist(self.file, facts.persisted, [module_entry(m) for m in self.modules])
        if written is not None:
            diff.append(written[0])
            commands.append(written[1])
        ok = f"kernel modules {', '.join(self.modules)} are loaded and listed in {self.file}"
        if skips:
            ok = f"kernel modules {', '.join(self.modules)} are listed in {self.file}"
        return _decision(diff, commands, skips, frozenset(), ok)


class SysctlsSet:
    """Ensure kernel parameters have these values now (`sysctl -w`) and after boot (one sysctl.d file).

    Where /proc/sys/<key> is read-only in a container, the value is persisted and its runtime set skipped.

    Example: ``SysctlsSet([("net.ipv4.ip_forward", 1), ("fs.inotify.max_user_watches", 256000)])``
    """

    def __init__(self, values: Sequence[tuple[str, str | int]], *, file: str = SYSCTL_FILE) -> None:
        bad = [k for k, _ in values if not SYSCTL_KEY.match(k)]
        if bad or not values:
            raise ValueError(f"not sysctl keys: {bad or list(values)!r}")
        self.values = [(k, sysctl_value(k, v)) for k, v in values]
        self.file = file

    @property
    def name(self) -> str:
        """Return the step label."""
        return "sysctl " + " ".join(k for k, _ in self.values)

    @staticmethod
    def proc_path(key: str) -> str:
        """Return the key's file under /proc/sys."""
        return "/proc/sys/" + key.replace(".", "/")

    def probes(self) -> Mapping[str, str]:
        """Read each runtime value and whether it is writable, the file, the container type."""
        probes: dict[str, str] = {}
        for i, (key, _) in enumerate(self.values):
            probes[f"runtime.{i}"] = sysctl_probe(key)
            probes[f"writable.{i}"] = f"test -w {q(self.proc_path(key))}"
        return {**probes, "file": content_probe(self.file), "virt": VIRT}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SharedKernelFacts:
        """Normalise whitespace in the runtime values (sysctl separates numbers with tabs)."""
        runtime = tuple(sysctl_runtime(outputs[f"runtime.{i}"]) for i in range(len(self.values)))
        writable = tuple(outputs[f"writable.{i}"].ok for i in range(len(self.values)))
        return SharedKernelFacts(runtime, writable, parse_content(outputs["file"], self.file),
                                 _container(outputs))

    def decide(self, facts: SharedKernelFacts) -> Decision:
        """Set what differs (or skip that where read-only in a container), persist every line."""
        diff: list[str] = []
        commands: list[Command] = []
        skips: list[str] = []
        for (key, value), runtime, writable in zip(self.values, facts.runtime, facts.writable, strict=True):
            if runtime != value:
                if facts.container and not writable:
                    what = "does not exist" if runtime is None else f"is {runtime}, read-only"
                    skips.append(f"runtime {key}: {self.proc_path(key)} {what} in this container "
                                 f"({facts.container}); the host's kernel owns it")
                else:
                    diff.append(f"{key}: {runtime} -> {value} (runtime)")
                    commands.append(sysctl_set(key, value))
        written = persist(self.file, facts.persisted, [sysctl_entry(k, v) for k, v in self.values])
        sets: frozenset[str] = frozenset()
        if written is not None:
            diff.append(written[0])
            commands.append(written[1])
            sets = content_marks(self.file)
        keys = ", ".join(k for k, _ in self.values)
        ok = f"sysctls {keys} as wanted (runtime and {self.file})"
        if skips:
            ok = f"sysctls {keys} persisted in {self.file}"
        return _decision(diff, commands, skips, sets, ok)
