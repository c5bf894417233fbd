"""A vendor apt repository: its signing key (fetched over HTTPS, pinned by fingerprint) and its sources entry.

Where the repository's host does not resolve from the node (no internet), the step is an explicit
skip that says so: it is decided from that fact, and the packages that need the repository skip too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from picluster.remote import APT_UPDATED, Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import content_probe, parse_content, q, write_command
from picluster.state.apt import APT_GET
from picluster.state.skip import skipped

FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
LABEL = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class RepoFacts:
    """The OS id and codename, the sources file, the key's fingerprint, and whether the host resolves."""

    os_id: str
    codename: str
    sources: bytes | None
    key_fingerprint: str
    resolves: bool


class AptRepository:
    """Ensure the apt repository `url/<os id>/<codename> <codename> main`, signed by the key at `key_url`
    whose fingerprint is `fingerprint`, is configured (the layout fluent-bit's repository uses).

    Example: ``AptRepository("fluent-bit", "https://packages.fluentbit.io", "https://.../fluentbit.key", "C3C0...")``
    """

    def __init__(self, label: str, url: str, key_url: str, fingerprint: str) -> None:
        fingerprint = fingerprint.replace(" ", "").upper()
        if not LABEL.match(label) or not FINGERPRINT.match(fingerprint):
            raise ValueError(f"bad repository label or key fingerprint: {label!r} {fingerprint!r}")
        if not url.startswith("https://") or not key_url.startswith("https://"):
            raise ValueError("a vendor repository and its key are fetched over https only")
        self.label, self.url, self.key_url, self.fingerprint = label, url.rstrip("/"), key_url, fingerprint
        self.host = urlsplit(self.url).hostname or ""

    @property
    def keyring(self) -> str:
        """Return where the dearmored key lives."""
        return f"/usr/share/keyrings/{self.label}-keyring.gpg"

    @property
    def sources(self) -> str:
        """Return the sources file."""
        return f"/etc/apt/sources.list.d/{self.label}.list"

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"apt repository {self.label}"

    def line(self, os_id: str, codename: str) -> str:
        """Return the sources line for this OS."""
        return f"deb [signed-by={self.keyring}] {self.url}/{os_id}/{codename} {codename} main\n"

    def probes(self) -> Mapping[str, str]:
        """Read the OS, the sources file, the key's fingerprint, and whether the repository's host resolves."""
        return {
            "os": ". /etc/os-release && echo \"$ID $VERSION_CODENAME\"",
            "sources": content_probe(self.sources),
            "key": f"gpg --show-keys --with-colons {q(self.keyring)} | awk -F: '$1 == \"fpr\" {{print $10; exit}}'",
            "resolves": f"getent ahosts {q(self.host)}",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> RepoFacts:
        """Type the outputs."""
        os_id, _, codename = outputs["os"].stdout.strip().partition(" ")
        return RepoFacts(os_id, codename, parse_content(outputs["sources"], self.sources),
                         outputs["key"].stdout.strip().upper(), outputs["resolves"].ok)

    def decide(self, facts: RepoFacts) -> Decision:
        """Fetch and check the key, write the sources entry, update apt's lists; or skip without a network."""
        line = self.line(facts.os_id, facts.codename).encode()
        key_ok = facts.key_fingerprint == self.fingerprint
        if key_ok and facts.sources == line:
            return Ok(f"{self.sources} and its key {self.fingerprint[-16:]} are in place")
        if not facts.resolves:
            return skipped(f"{self.host} does not resolve from this host (no internet?), so the {self.label} "
                           "vendor repository cannot be configured; its packages are skipped too")
        diff: list[str] = []
        commands: list[Command] = []
        if not key_ok:
            diff.append(f"key {self.keyring} from {self.key_url} (fingerprint {self.fingerprint})")
            commands.append(Command("\n".join([
                "set -e",
                "tmp=$(mktemp)",
                "trap 'rm -f -- \"$tmp\" \"$tmp.gpg\"' EXIT",
                f"curl -fsSL --retry 3 -o \"$tmp\" {q(self.key_url)}",
                'gpg --dearmor < "$tmp" > "$tmp.gpg"',
                "got=$(gpg --show-keys --with-colons \"$tmp.gpg\" | awk -F: '$1 == \"fpr\" {print $10; exit}')",
                f'if [ "$got" != {q(self.fingerprint)} ]; then echo "key fingerprint $got is not the pinned '
                f'{self.fingerprint}" >&2; exit 1; fi',
                f'install -m 0644 -o root -g root "$tmp.gpg" {q(self.keyring)}',
            ])))
        if facts.sources != line:
            diff.append(f"{self.sources}: {line.decode().strip()}")
            commands.append(write_command(self.sources, line, mode=0o644, owner="root", group="root"))
        commands.append(Command(f"{APT_GET} update"))
        return Change("\n".join(diff), commands, sets=frozenset({APT_UPDATED}))
