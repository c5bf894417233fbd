"""A file whose new content is checked by the program that reads it before it replaces the old one."""

from __future__ import annotations

import hashlib

from picluster.remote import Change, Command, Decision
from picluster.state._fs import write_command
from picluster.state.files import File, FileFacts


def checked_write(path: str, data: bytes, check: str, *, mode: int | None, owner: str | None,
                  group: str | None) -> Command:
    """Return the command that writes `data` beside `path`, runs `check` on it, and only then renames it.

    `check` is a shell command with `{path}` where the candidate file goes (it is quoted there).
    """
    return write_command(path, data, mode=mode, owner=owner, group=group, check=check)


class CheckedFile(File):
    """`File`, except that new content must pass `check` (e.g. ``nft -c -f {path}``) before it is installed.

    Example: ``CheckedFile("/etc/dnsmasq.conf", text, check="dnsmasq --test -C {path}")``
    """

    def __init__(self, path: str, content: str | bytes, *, check: str, mode: int | None = 0o644,
                 owner: str | None = "root", group: str | None = "root") -> None:
        super().__init__(path, content, mode=mode, owner=owner, group=group)
        if "{path}" not in check:
            raise ValueError(f"the check must name the candidate file as {{path}}: {check!r}")
        self.check = check

    def decide(self, facts: FileFacts) -> Decision:
        """As `File`, with the content write replaced by the checked one."""
        decision = super().decide(facts)
        if not isinstance(decision, Change):
            return decision
        same = facts.content == self.data or facts.sha256 == hashlib.sha256(self.data).hexdigest()
        if same and facts.stat is not None and facts.stat.is_file:
            return decision  # only attributes differ
        write = checked_write(self.path, self.data, self.check, mode=self.mode, owner=self.owner, group=self.group)
        return Change(decision.diff, [write], decision.sets, decision.clears)
