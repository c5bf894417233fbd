"""Files, lines in files, and directories."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from picluster.remote import (
    NEEDS_REBOOT,
    UNITS_CHANGED,
    Change,
    Command,
    Decision,
    Ok,
    ProbeOutput,
    StepError,
    changed_mark,
)
from picluster.state._fs import (
    PathStat,
    as_bytes,
    as_text,
    attr_commands,
    attr_diff,
    content_probe,
    parse_content,
    parse_stat,
    q,
    rewrite_command,
    single_line,
    stat_probe,
    text_diff,
    write_command,
)

SYSTEMD_DIRS = ("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")


def content_marks(path: str) -> frozenset[str]:
    """Return the marks a content change of `path` leaves (systemd units need a daemon-reload)."""
    marks = {changed_mark(path)}
    if path.startswith(SYSTEMD_DIRS):
        marks.add(UNITS_CHANGED)
    return frozenset(marks)


@dataclass(frozen=True)
class FileFacts:
    """A file's stat and its bytes (or, for a secret, the sha256 of its bytes)."""

    stat: PathStat | None
    content: bytes | None
    sha256: str | None


class File:
    """Ensure a file has this content, mode, owner and group (None leaves an attribute unmanaged).

    The file is replaced atomically (a symbolic link at `path` becomes a regular file); with
    `mode=None` a new file gets 0600 and an existing one keeps its mode.

    + content: the bytes or text to hold (render templates before passing them)
    + secret: never show the content in diffs or results; compared by sha256 only

    Example: ``File("/etc/hostname", "node1\\n")``
    """

    def __init__(
        self,
        path: str,
        content: str | bytes,
        *,
        mode: int | None = 0o644,
        owner: str | None = "root",
        group: str | None = "root",
        secret: bool = False,
    ) -> None:
        self.path = path
        self.data = content.encode() if isinstance(content, str) else content
        self.mode, self.owner, self.group = mode, owner, group
        self.secret = secret

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"file {self.path}"

    def probes(self) -> Mapping[str, str]:
        """Read stat and content (or only its sha256, for a secret)."""
        read = f"sha256sum < {q(self.path)}" if self.secret else content_probe(self.path)
        return {"stat": stat_probe(self.path), "content": read}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> FileFacts:
        """Type the probe outputs."""
        stat = parse_stat(outputs["stat"])
        if stat is None or not stat.is_file:
            return FileFacts(stat, None, None)
        if self.secret:
            return FileFacts(stat, None, outputs["content"].stdout[:64])
        return FileFacts(stat, parse_content(outputs["content"], self.path), None)

    def decide(self, facts: FileFacts) -> Decision:
        """Compare content and attributes."""
        st = facts.stat
        # Something else than a file there?
        if st is not None and not st.is_file and st.kind != "symbolic link":
            raise StepError(f"{self.path} is a {st.kind}, not a file; remove it or choose another path")
        if facts.sha256 is not None:
            same = facts.sha256 == hashlib.sha256(self.data).hexdigest()
        else:
            same = facts.content == self.data
        if st is not None and st.is_file and same:
            attrs = attr_diff(self.path, st, self.mode, self.owner, self.group)
            if not attrs:
                return Ok(f"{self.path} has the wanted content ({len(self.data)} bytes) and attributes")
            fix = attr_commands(q(self.path), self.mode, self.owner, self.group)
            return Change("\n".join(attrs), [Command("\n".join(["set -e", *fix]))])
        if self.secret:
            diff = f"{self.path}: content {'replaced' if st else 'created'} (secret, not shown)"
        elif st is not None and not st.is_file:
            diff = f"{self.path}: symbolic link replaced by a file\n" + text_diff(self.path, None, self.data)
        else:
            diff = text_diff(self.path, facts.content, self.data)
        write = write_command(self.path, self.data, mode=self.mode, owner=self.owner, group=self.group)
        return Change(diff, [write], sets=content_marks(self.path))


def edit_lines(text: str, line: str, pattern: re.Pattern[str], *, present: bool) -> str | None:
    """Return `text` with `line` replacing every line matching `pattern` (or appended if none does),
    or without the matching lines if not `present`; None when nothing changes."""
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n") if body else []
    matches = [i for i, existing in enumerate(lines) if pattern.search(existing)]
    if present:
        if matches and all(lines[i] == line for i in matches):
            return None
        new = [line if i in matches else existing for i, existing in enumerate(lines)]
        if not matches:
            new.append(line)
    else:
        if not matches:
            return None
        new = [existing for i, existing in enumerate(lines) if i not in matches]
    return "\n".join(new) + "\n" if new else ""


@dataclass(frozen=True)
class LineFacts:
    """The file's bytes, None when it does not exist."""

    content: bytes | None


class Line:
    """Ensure a line is in a file: replace the lines matching `regex`, else append (or remove them).

    + regex: Python regex searched in each line; default: the exact line
    + present: False removes the matching lines
    + mode/owner/group: used only when the file has to be created (an existing file keeps its own)
    + reboot: a change takes effect only at the next boot (the `NEEDS_REBOOT` mark; see `Reboot`)

    The file is rewritten atomically; not for secret files (the diff shows their lines).

    Example: ``Line("/etc/ssh/sshd_config", "PasswordAuthentication no", regex=r"^#?PasswordAuthentication")``
    """

    def __init__(
        self,
        path: str,
        line: str,
        *,
        regex: str | None = None,
        present: bool = True,
        mode: int = 0o644,
        owner: str = "root",
        group: str = "root",
        reboot: bool = False,
    ) -> None:
        self.path = path
        self.line = single_line(line, "line")
        self.pattern = re.compile(regex if regex is not None else "^" + re.escape(line) + "$")
        self.present = present
        self.mode, self.owner, self.group = mode, owner, group
        self.reboot = reboot

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"line in {self.path}"

    def probes(self) -> Mapping[str, str]:
        """Read the file's bytes."""
        return {"content": content_probe(self.path)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> LineFacts:
        """Type the probe output."""
        return LineFacts(parse_content(outputs["content"], self.path))

    def decide(self, facts: LineFacts) -> Decision:
        """Edit the text in memory and compare."""
        if facts.content is None and not self.present:
            return Ok(f"{self.path} does not exist, so has no line matching {self.pattern.pattern!r}")
        old = as_text(facts.content or b"")
        new = edit_lines(old, self.line, self.pattern, present=self.present)
        if new is None:
            if self.present:
                return Ok(f"{self.path} has the line {self.line!r}")
            return Ok(f"{self.path} has no line matching {self.pattern.pattern!r}")
        data = as_bytes(new)
        write = rewrite_command(self.path, facts.content, data, mode=self.mode, owner=self.owner, group=self.group)
        marks = content_marks(self.path) | ({NEEDS_REBOOT} if self.reboot else set())
        return Change(text_diff(self.path, facts.content, data), [write], sets=frozenset(marks))


@dataclass(frozen=True)
class DirectoryFacts:
    """The directory's stat, None when missing."""

    stat: PathStat | None


class Directory:
    """Ensure a directory exists with this mode, owner and group (parents are created as needed).

    Example: ``Directory("/etc/rancher/k3s", mode=0o755)``
    """

    def __init__(
        self, path: str, *, mode: int | None = 0o755, owner: str | None = "root", group: str | None = "root"
    ) -> None:
        self.path = str(PurePosixPath(path))
        self.mode, self.owner, self.group = mode, owner, group

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"directory {self.path}"

    def probes(self) -> Mapping[str, str]:
        """Read the path's stat."""
        return {"stat": stat_probe(self.path)}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> DirectoryFacts:
        """Type the probe output."""
        return DirectoryFacts(parse_stat(outputs["stat"]))

    def decide(self, facts: DirectoryFacts) -> Decision:
        """Compare existence and attributes."""
        st = facts.stat
        p = q(self.path)
        attrs = attr_commands(p, self.mode, self.owner, self.group)
        if st is None:
            create = Command("\n".join(["set -e", f"mkdir -p -- {p}", *attrs]))
            return Change(f"create directory {self.path}", [create])
        if st.kind != "directory":
            raise StepError(f"{self.path} is a {st.kind}, not a directory; remove it or choose another path")
        diff = attr_diff(self.path, st, self.mode, self.owner, self.group)
        if not diff:
            return Ok(f"directory {self.path} exists with the wanted attributes")
        return Change("\n".join(diff), [Command("\n".join(["set -e", *attrs]))])
