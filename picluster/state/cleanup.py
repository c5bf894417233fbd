"""What a K3S reset cleans on a node (the reference's tasks/cleaning.yml): logs and files gone, iSCSI discovery
records of other portals deleted, a data folder emptied. Each reads what is there and removes only that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, Ok, ProbeOutput
from picluster.state._fs import q


class PathsAbsent:
    """These paths gone (files or folders), and every file named `pattern` under `under` (e.g. *.pos)."""

    def __init__(self, label: str, paths: Sequence[str], *, under: str = "", pattern: str = "") -> None:
        self.label, self.paths, self.under, self.pattern = label, list(paths), under, pattern

    @property
    def name(self) -> str:
        """Return the step label."""
        return self.label

    def probes(self) -> Mapping[str, str]:
        """List what exists (one path a line)."""
        found = f"for p in {' '.join(q(p) for p in self.paths)}; do [ -e \"$p\" ] && printf '%s\\n' \"$p\"; done"
        if self.pattern:
            found += f"; find {q(self.under)} -xdev -type f -name {q(self.pattern)} 2>/dev/null"
        return {"found": found + "; true"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> tuple[str, ...]:
        """The paths that exist."""
        return tuple(dict.fromkeys(line for line in outputs["found"].stdout.splitlines() if line.startswith("/")))

    def decide(self, facts: tuple[str, ...]) -> Decision:
        """Remove what exists."""
        if not facts:
            what = [*self.paths, *([f"{self.under}/**/{self.pattern}"] if self.pattern else [])]
            return Ok(f"none there: {', '.join(what)}")
        return Change("\n".join(f"- {p}" for p in facts), [Command("rm -rf -- " + " ".join(q(p) for p in facts))])


@dataclass(frozen=True)
class Portal:
    """One iSCSI discovery record: its portal (address:port) and how it was found."""

    portal: str
    kind: str

    @property
    def address(self) -> str:
        return self.portal.rsplit(":", 1)[0]


def parse_discovery(text: str) -> list[Portal]:
    """`iscsiadm -m discovery` lines ("10.0.0.1:3260 via sendtargets") as portals."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "via":
            out.append(Portal(parts[0], parts[2]))
    return out


class IscsiDiscoveryCleaned:
    """Every iSCSI discovery record deleted except those of the portals at `keep` (the reference keeps the
    gateway's); nothing to do where open-iscsi is not installed."""

    def __init__(self, keep: Sequence[str]) -> None:
        self.keep = tuple(keep)

    name = "iscsi discovery records"

    def probes(self) -> Mapping[str, str]:
        """List the records (exit 3: no iscsiadm)."""
        return {"records": "command -v iscsiadm >/dev/null || exit 3; iscsiadm -m discovery 2>/dev/null; true"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> list[Portal] | None:
        """The records; None without iscsiadm."""
        return None if outputs["records"].exit_code == 3 else parse_discovery(outputs["records"].stdout)

    def decide(self, facts: list[Portal] | None) -> Decision:
        """Delete the others."""
        if facts is None:
            return Ok("iscsiadm is not installed: no discovery records")
        drop = [p for p in facts if p.address not in self.keep]
        if not drop:
            return Ok(f"no discovery record besides {', '.join(self.keep) or 'none'}")
        return Change("\n".join(f"- {p.portal} via {p.kind}" for p in drop),
                      [Command(f"iscsiadm -m discovery -p {q(p.portal)} -o delete") for p in drop])


class FolderEmptied:
    """Everything inside `path` deleted (the folder itself, a mount point, stays; so does lost+found)."""

    def __init__(self, path: str) -> None:
        self.path = path.rstrip("/") or "/"
        if self.path == "/":
            raise ValueError("refusing to empty /")

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"empty {self.path}"

    def _entries(self) -> str:
        return f"find {q(self.path)} -mindepth 1 -maxdepth 1 ! -name lost+found"

    def probes(self) -> Mapping[str, str]:
        """List the entries (a missing folder lists none)."""
        return {"entries": f"[ -d {q(self.path)} ] || exit 0; {self._entries()}"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> tuple[str, ...]:
        """The entries."""
        return tuple(line for line in outputs["entries"].stdout.splitlines() if line.strip())

    def decide(self, facts: tuple[str, ...]) -> Decision:
        """Delete them."""
        if not facts:
            return Ok(f"{self.path} is empty")
        shown = [f"- {p}" for p in facts[:10]] + ([f"... and {len(facts) - 10} more"] if len(facts) > 10 else [])
        return Change("\n".join(shown), [Command(f"{self._entries()} -exec rm -rf -- {{}} +")])
