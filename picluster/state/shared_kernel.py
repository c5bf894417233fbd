"""Kernel modules and sysctls on a host that may not own its kernel (a container shares its host's).

Where the host is a container (`systemd-detect-virt --container`), loading a module or writing a
sysctl that is not namespaced is impossible: these steps still persist the setting in its file and
report the runtime part as an explicit skip, decided from the host's facts, never from a lab flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Change, Decision, Ok, ProbeOutput
from picluster.state.kernel import KernelModule, PersistedFacts, Sysctl
from picluster.state.skip import IN_CONTAINER, skipped

VIRT = "systemd-detect-virt --container"


@dataclass(frozen=True)
class SharedKernelFacts:
    """The primitive's facts, the container type (empty when none) and whether the runtime is writable."""

    inner: PersistedFacts
    container: str
    writable: bool


def _container(outputs: Mapping[str, ProbeOutput]) -> str:
    out = outputs["virt"]
    return out.stdout.strip() if out.ok else ""


def _annotate(decision: Decision, note: str) -> Decision:
    """A persist-only decision, with the runtime part reported as skipped."""
    if isinstance(decision, Ok):
        return skipped(f"{note}; {decision.reason}")
    return Change(f"{decision.diff}\n(skipped: {note})", decision.commands, decision.sets, decision.clears)


class ModuleLoaded(KernelModule):
    """`KernelModule`, except that in a container a module that is not loaded is persisted, not loaded.

    Example: ``ModuleLoaded("br_netfilter")``
    """

    def probes(self) -> Mapping[str, str]:
        """The primitive's probes plus the container type."""
        return {**super().probes(), "virt": VIRT}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SharedKernelFacts:  # type: ignore[override]
        """Type the outputs."""
        return SharedKernelFacts(super().parse(outputs, marks), _container(outputs), True)

    def decide(self, facts: SharedKernelFacts) -> Decision:  # type: ignore[override]
        """Load and persist; in a container, persist only and say why the load is skipped."""
        if facts.container and facts.inner.runtime is None:
            note = (f"load {self.module}: this host is a container ({facts.container}) sharing its host's "
                    "kernel, where modprobe is not possible")
            return _annotate(super().decide(PersistedFacts("loaded", facts.inner.persisted)), note)
        return super().decide(facts.inner)


class SysctlSet(Sysctl):
    """`Sysctl`, except that where /proc/sys/<key> is read-only (a container) the value is only persisted.

    Example: ``SysctlSet("fs.inotify.max_user_watches", 256000)``
    """

    @property
    def proc_path(self) -> str:
        """Return the key's file under /proc/sys."""
        return "/proc/sys/" + self.key.replace(".", "/")

    def probes(self) -> Mapping[str, str]:
        """The primitive's probes plus the container type and whether the key is writable."""
        return {**super().probes(), "virt": VIRT, "writable": f"test -w '{self.proc_path}'"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SharedKernelFacts:  # type: ignore[override]
        """Type the outputs."""
        return SharedKernelFacts(super().parse(outputs, marks), _container(outputs), outputs["writable"].ok)

    def decide(self, facts: SharedKernelFacts) -> Decision:  # type: ignore[override]
        """Set and persist; where the runtime value cannot be written in a container, persist only."""
        inner = facts.inner
        if facts.container and inner.runtime != self.value and not facts.writable:
            what = "does not exist" if inner.runtime is None else f"is {inner.runtime}, read-only"
            note = (f"runtime {self.key}: {self.proc_path} {what} in this container ({facts.container}); "
                    "the host's kernel owns it")
            return _annotate(super().decide(PersistedFacts(self.value, inner.persisted)), note)
        return super().decide(inner)


__all__ = ["IN_CONTAINER", "ModuleLoaded", "SysctlSet"]
