"""The host's own names in /etc/hosts, kept first for their address and compatible with cloud-init.

cloud-init (`manage_etc_hosts: localhost`) rewrites /etc/hosts at every boot (tabs) and adds its own
`127.0.1.1 <name> <name>` entry when none matches its idea of the FQDN. This step compares entries,
not bytes: it is satisfied when the first entry for the address names the FQDN, then the short name,
and it leaves other entries (cloud-init's) in place, so neither side undoes the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import Change, Decision, Ok, ProbeOutput
from picluster.state._fs import as_bytes, as_text, content_probe, parse_content, rewrite_command, text_diff

HOSTS = "/etc/hosts"


@dataclass(frozen=True)
class HostsFacts:
    """The bytes of /etc/hosts (None when missing)."""

    content: bytes | None


def entries(text: str, address: str) -> list[tuple[int, list[str]]]:
    """Return (line number, names) of every entry for `address`, comments ignored."""
    found = []
    for i, line in enumerate(text.split("\n")):
        words = line.split("#", 1)[0].split()
        if words and words[0] == address:
            found.append((i, words[1:]))
    return found


class HostsEntry:
    """Ensure the first /etc/hosts entry for `address` is `address names...`.

    Example: ``HostsEntry("127.0.1.1", ["node1.lab.example", "node1"])``
    """

    def __init__(self, address: str, names: Sequence[str]) -> None:
        if not names or any(not n or any(c.isspace() or c == "#" for c in n) for n in (address, *names)):
            raise ValueError(f"bad hosts entry: {address!r} {list(names)!r}")
        self.address, self.names = address, list(names)

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"/etc/hosts {self.address} {' '.join(self.names)}"

    def probes(self) -> Mapping[str, str]:
        """Read the file."""
        return {"content": content_probe(HOSTS)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> HostsFacts:
        """Type the output."""
        return HostsFacts(parse_content(outputs["content"], HOSTS))

    def decide(self, facts: HostsFacts) -> Decision:
        """Put the entry first for its address (replacing the first one there), else append it."""
        text = as_text(facts.content or b"")
        found = entries(text, self.address)
        if found and found[0][1] == self.names:
            return Ok(f"{HOSTS}: {self.address} is first {' '.join(self.names)}")
        line = "\t".join([self.address, *self.names])
        lines = text[:-1].split("\n") if text.endswith("\n") else (text.split("\n") if text else [])
        if found:
            lines[found[0][0]] = line
        else:
            lines.append(line)
        data = as_bytes("\n".join(lines) + "\n")
        return Change(text_diff(HOSTS, facts.content, data), [rewrite_command(HOSTS, facts.content, data)])
