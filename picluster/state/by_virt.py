"""A file whose content depends on whether the host is a container (which then does not own its clock,
kernel or disks): the content is chosen from that fact at run time, never from a lab flag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from picluster.remote import Decision, ProbeOutput
from picluster.state.files import File, FileFacts

VIRT = "systemd-detect-virt --container"


@dataclass(frozen=True)
class VirtFileFacts:
    """The container type (empty when none) and the file's facts."""

    container: str
    file: FileFacts


class FileByVirt:
    """Ensure `path` holds `render(container)`, where container is the host's container type or "".

    Example: ``FileByVirt("/etc/default/chrony", lambda c: 'DAEMON_OPTS="-x"\\n' if c else "")``
    """

    def __init__(self, path: str, render: Callable[[str], str], *, mode: int = 0o644) -> None:
        self.path = path
        self.render = render
        self.mode = mode
        self._probe_file = File(path, b"", mode=mode)

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"file {self.path}"

    def probes(self) -> Mapping[str, str]:
        """The file's probes and the container type."""
        return {**self._probe_file.probes(), "virt": VIRT}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> VirtFileFacts:
        """Type the outputs."""
        virt = outputs["virt"]
        return VirtFileFacts(virt.stdout.strip() if virt.ok else "", self._probe_file.parse(outputs, marks))

    def decide(self, facts: VirtFileFacts) -> Decision:
        """Decide as `File` with the content for this host."""
        return File(self.path, self.render(facts.container), mode=self.mode).decide(facts.file)
