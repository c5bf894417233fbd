"""File, Line and Directory: decisions from facts, and real runs of their commands with hostile values."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from stage_support import Upload

from picluster.remote import UNITS_CHANGED, Change, Ok, ProbeOutput, StepError, changed_mark
from picluster.state import Directory, File, Line
from picluster.state._fs import PathStat, rewrite_command
from picluster.state.files import DirectoryFacts, FileFacts, LineFacts, edit_lines

if TYPE_CHECKING:
    from conftest import LocalShell

HOSTILE = "a b 'single' \"double\" $(touch PWNED) `touch PWNED` ${HOME} ; & | é ✓"
HOSTILE_DIR = "dir with spaces 'q' $(touch PWNED) `id` é"
ROOT_FILE = PathStat("regular file", 0o644, "root", "root")


def file_facts(content: bytes | None, stat: PathStat | None = ROOT_FILE) -> FileFacts:
    return FileFacts(stat if content is not None else None, content, None)


def test_file_with_the_wanted_content_and_attributes_is_ok_and_says_why() -> None:
    decision = File("/etc/hostname", "node1\n").decide(file_facts(b"node1\n"))
    assert decision == Ok("/etc/hostname has the wanted content (6 bytes) and attributes")


def test_missing_file_is_created_with_a_diff_and_its_content_on_stdin_only() -> None:
    decision = File("/etc/hostname", "node1\n", mode=0o600).decide(file_facts(None))
    assert isinstance(decision, Change)
    assert decision.diff == "--- /dev/null\n+++ /etc/hostname\n@@ -0,0 +1 @@\n+node1"
    (write,) = decision.commands
    assert "node1" not in write.script
    assert write.stdin is not None and base64.b64decode(write.stdin) == b"node1\n"
    assert "chmod -- 600" in write.script and "chown -- root:root" in write.script
    assert decision.sets == {changed_mark("/etc/hostname")}


def test_changed_content_shows_a_unified_diff() -> None:
    decision = File("/etc/hosts", "a\nc\n").decide(file_facts(b"a\nb\n"))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines()[-2:] == ["-b", "+c"]


def test_only_attributes_differ_fixes_them_without_rewriting() -> None:
    stat = PathStat("regular file", 0o600, "pi", "root")
    decision = File("/etc/x", "x").decide(FileFacts(stat, b"x", None))
    assert isinstance(decision, Change)
    assert decision.diff == "mode of /etc/x: 0600 -> 0644\nowner of /etc/x: pi -> root"
    assert decision.commands[0].stdin is None and not decision.sets


def test_unmanaged_attributes_are_not_compared() -> None:
    stat = PathStat("regular file", 0o600, "pi", "pi")
    assert isinstance(File("/etc/x", "x", mode=None, owner=None, group=None).decide(FileFacts(stat, b"x", None)), Ok)


def test_a_secret_is_compared_by_hash_and_never_shown() -> None:
    step = File("/etc/rancher/token", "s3cret\n", mode=0o600, secret=True)
    assert "cat" not in step.probes()["content"] and "sha256sum" in step.probes()["content"]
    stat = PathStat("regular file", 0o600, "root", "root")
    digest = hashlib.sha256(b"s3cret\n").hexdigest()
    outputs = {"stat": ProbeOutput("regular file|600|root|root\n"), "content": ProbeOutput(digest + "  -\n")}
    facts = step.parse(outputs, frozenset())
    assert facts == FileFacts(stat, None, digest)
    assert isinstance(step.decide(facts), Ok)
    changed = step.decide(FileFacts(stat, None, "0" * 64))
    assert isinstance(changed, Change)
    assert changed.diff == "/etc/rancher/token: content replaced (secret, not shown)"
    assert all("s3cret" not in c.script for c in changed.commands)


def test_a_unit_file_change_asks_for_a_daemon_reload() -> None:
    decision = File("/etc/systemd/system/k3s.service", "[Unit]\n").decide(file_facts(None))
    assert isinstance(decision, Change) and UNITS_CHANGED in decision.sets


def test_a_directory_in_the_way_is_an_error() -> None:
    with pytest.raises(StepError, match="/etc/x is a directory, not a file"):
        File("/etc/x", "x").decide(FileFacts(PathStat("directory", 0o755, "root", "root"), None, None))


@pytest.mark.parametrize(
    ("text", "line", "regex", "present", "expected"),
    [
        ("a\n#PasswordAuthentication yes\nb\n", "PasswordAuthentication no", r"^#?PasswordAuthentication", True,
         "a\nPasswordAuthentication no\nb\n"),
        ("a\nb", "c", None, True, "a\nb\nc\n"),
        ("", "c", None, True, "c\n"),
        ("a\nc\nb\n", "c", None, False, "a\nb\n"),
        ("a\nc\n", "c", None, True, None),
        ("a\nc", "c", None, True, None),
        ("a\n", "c", None, False, None),
        ("x=1\nx=2\n", "x=3", r"^x=", True, "x=3\nx=3\n"),
    ],
)
def test_edit_lines(text: str, line: str, regex: str | None, present: bool, expected: str | None) -> None:
    pattern = re.compile(regex or "^" + re.escape(line) + "$")
    assert edit_lines(text, line, pattern, present=present) == expected


def test_line_already_there_is_ok_and_says_why() -> None:
    step = Line("/etc/ssh/sshd_config", "PasswordAuthentication no", regex=r"^#?PasswordAuthentication")
    assert step.decide(LineFacts(b"PasswordAuthentication no\n")) == Ok(
        "/etc/ssh/sshd_config has the line 'PasswordAuthentication no'"
    )
    absent = Line("/etc/x", "y", present=False)
    assert absent.decide(LineFacts(None)) == Ok("/etc/x does not exist, so has no line matching '^y$'")
    assert absent.decide(LineFacts(b"z\n")) == Ok("/etc/x has no line matching '^y$'")


def test_line_change_keeps_the_existing_files_attributes() -> None:
    decision = Line("/etc/x", "y").decide(LineFacts(b"z\n"))
    assert isinstance(decision, Change)
    assert decision.diff.splitlines()[-1] == "+y"
    assert "chmod -- " not in decision.commands[0].script and "--reference" in decision.commands[0].script


def test_a_line_in_a_missing_file_creates_it_with_the_given_attributes() -> None:
    decision = Line("/etc/x", "y", mode=0o600, owner="admin", group="adm").decide(LineFacts(None))
    assert isinstance(decision, Change)
    script = decision.commands[0].script
    assert "chown -- admin:adm \"$tmp\"" in script and "chmod -- 600 \"$tmp\"" in script
    assert decision.commands[0].stdin == base64.b64encode(b"y\n") + b"\n"


def test_a_rewrite_sets_attributes_only_on_a_new_file() -> None:
    new = rewrite_command("/etc/fstab", None, b"x\n").script
    assert "chown -- root:root \"$tmp\"" in new and "chmod -- 644 \"$tmp\"" in new
    kept = rewrite_command("/etc/fstab", b"", b"x\n", mode=0o600).script
    assert "chown -- " not in kept and "chmod -- 6" not in kept and "--reference=/etc/fstab" in kept


def test_a_line_must_be_one_line() -> None:
    with pytest.raises(ValueError, match="single line"):
        Line("/etc/x", "a\nb")


def test_directory_decisions() -> None:
    step = Directory("/srv/data/", mode=0o750)
    assert step.path == "/srv/data"
    assert step.decide(DirectoryFacts(PathStat("directory", 0o750, "root", "root"))) == Ok(
        "directory /srv/data exists with the wanted attributes"
    )
    created = step.decide(DirectoryFacts(None))
    assert isinstance(created, Change) and created.diff == "create directory /srv/data"
    assert created.commands[0].script.splitlines() == [
        "set -e",
        "mkdir -p -- /srv/data",
        "chown -- root:root /srv/data",
        "chmod -- 750 /srv/data",
    ]
    with pytest.raises(StepError, match="is a regular file, not a directory"):
        step.decide(DirectoryFacts(ROOT_FILE))


def test_hostile_paths_and_content_survive_a_real_shell(local: LocalShell, tmp_path: Path, me: tuple[str, str]) -> None:
    user, group = me
    d = tmp_path / HOSTILE_DIR
    f = d / f"file\nwith newline {HOSTILE}"
    content = (HOSTILE + "\n\x00\xff raw bytes\n").encode("utf-8", "surrogateescape") + b"\xff\xfe"
    steps = [
        Directory(str(d), mode=0o700, owner=user, group=group),
        File(str(f), content, mode=0o640, owner=user, group=group),
        Line(str(f), "added " + HOSTILE, regex=r"^added "),
    ]
    first = local.apply(steps)
    assert [r.status for r in first] == ["changed", "changed", "changed"], first
    assert f.read_bytes() == content + b"\nadded " + HOSTILE.encode() + b"\n"
    assert f.stat().st_mode & 0o777 == 0o640 and d.stat().st_mode & 0o777 == 0o700
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    again = local.apply(steps[:1] + steps[2:])
    assert [r.status for r in again] == ["ok", "ok"], again
    assert again[1].reason == f"{f} has the line {'added ' + HOSTILE!r}"
    assert [p.name for p in d.iterdir()] == [f.name]  # no temporary file left behind


def test_a_dry_run_decides_but_changes_nothing(local: LocalShell, tmp_path: Path) -> None:
    target = tmp_path / "new"
    (result,) = local.apply([File(str(target), "x\n", owner=None, group=None)], dry_run=True)
    assert result.status == "changed" and result.diff and result.commands
    assert not target.exists()


def test_a_file_in_a_missing_hostile_directory_gets_its_parents(local: LocalShell, tmp_path: Path) -> None:
    target = tmp_path / HOSTILE_DIR / "etc dir" / "conf"
    (result,) = local.apply([File(str(target), "x=1\n", owner=None, group=None)])
    assert result.status == "changed", result
    assert target.read_text() == "x=1\n"
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("size", [0, 1, 49151, 49152, 49153, 3 * 1024 * 1024 + 7])
def test_a_file_streamed_as_stdin_arrives_whole(local: LocalShell, tmp_path: Path, size: int) -> None:
    import os

    source = tmp_path / "bundle.tar"
    source.write_bytes(os.urandom(size))
    target = tmp_path / f"staged {HOSTILE_DIR}" / "bundle.tar"
    step = Upload(source, target)
    command = step.decide(None).commands[0]
    assert command.stdin is None and command.stdin_file == source          # read as it is sent, not before
    (result,) = local.apply([step])
    assert result.status == "changed", result
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
