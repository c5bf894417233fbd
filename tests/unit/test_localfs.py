"""picluster.localfs: atomic local writes with their mode from the start, and bounded waits."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from picluster import localfs
from picluster.localfs import WaitTimedOut, wait_for, write_atomic


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """A umask of 0, so that a mode seen on disk is the one the code asked for, not the umask's doing."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_appears_whole_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "secret"
    write_atomic(target, "token\n", 0o600)
    assert target.read_text() == "token\n"
    assert mode(target) == 0o600
    assert os.listdir(target.parent) == ["secret"]


def test_bytes_are_written_as_they_are_and_replace_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    target.write_bytes(b"old")
    write_atomic(target, b"\x00\xffnew", 0o640)
    assert target.read_bytes() == b"\x00\xffnew"
    assert mode(target) == 0o640


def test_a_private_file_is_never_readable_by_others_while_written(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "key"
    seen: list[tuple[str, int]] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes) -> int:
        seen.append(("write", stat.S_IMODE(os.fstat(fd).st_mode)))
        return real_write(fd, data)

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(("replace", mode(Path(src))))
        raise OSError("disk gone")

    monkeypatch.setattr(localfs.os, "write", spying_write)
    monkeypatch.setattr(localfs.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, "private\n", 0o600)
    assert seen and all(m == 0o600 for _, m in seen), seen
    assert [what for what, _ in seen][-1] == "replace"
    assert os.listdir(tmp_path) == []


def test_a_stale_temporary_file_does_not_lend_its_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run killed half-way leaves its temporary file; a later process with the same pid reuses the name
    target = tmp_path / "key"
    stale = tmp_path / f".key.{os.getpid()}.tmp"
    stale.write_text("left over")
    stale.chmod(0o644)
    modes: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(localfs.os, "write", spying_write)
    write_atomic(target, "private\n", 0o600)
    assert modes and set(modes) == {0o600}
    assert target.read_text() == "private\n" and mode(target) == 0o600
    assert not stale.exists()


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n")

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(localfs.os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["state.json"]


def test_dir_mode_makes_the_missing_folder_of_the_file_so(tmp_path: Path) -> None:
    target = tmp_path / "config" / "secrets" / "token"
    write_atomic(target, "x\n", 0o600, dir_mode=0o700)
    assert mode(tmp_path / "config" / "secrets") == 0o700
    assert mode(target) == 0o600


def test_dir_mode_leaves_an_existing_folder_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    write_atomic(tmp_path / "shared" / "file", "x\n", dir_mode=0o700)
    assert mode(tmp_path / "shared") == 0o755


def test_without_dir_mode_missing_folders_get_the_default(tmp_path: Path) -> None:
    write_atomic(tmp_path / "plain" / "file", "x\n")
    assert mode(tmp_path / "plain") == 0o777          # mkdir's default under the test's umask of 0
    assert mode(tmp_path / "plain" / "file") == 0o644


class FakeClock:
    """Time that moves only when slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_for_gives_up_after_the_timeout_saying_what_it_waited_for() -> None:
    time = FakeClock()
    calls: list[float] = []

    def never() -> None:
        calls.append(time.now)

    with pytest.raises(WaitTimedOut, match=r"^timed out after 3s waiting for the proxy$"):
        wait_for("the proxy", never, 3.0, 1.0, clock=time.clock, sleep=time.sleep)
    assert time.now == 1003.0
    assert calls == [1000.0, 1001.0, 1002.0, 1003.0]
    assert sum(time.sleeps) == 3.0


def test_wait_for_never_sleeps_past_the_deadline() -> None:
    time = FakeClock()
    with pytest.raises(WaitTimedOut):
        wait_for("x", lambda: False, 2.5, 1.0, clock=time.clock, sleep=time.sleep)
    assert time.sleeps == [1.0, 1.0, 0.5]


def test_wait_for_returns_the_probes_first_real_value() -> None:
    time = FakeClock()
    answers = iter([None, False, "ready", "later"])
    calls = 0

    def probe() -> str | bool | None:
        nonlocal calls
        calls += 1
        return next(answers)

    assert wait_for("x", probe, 60.0, 0.5, clock=time.clock, sleep=time.sleep) == "ready"
    assert calls == 3
    assert time.sleeps == [0.5, 0.5]


def test_wait_for_accepts_falsy_values_other_than_none_and_false() -> None:
    time = FakeClock()
    assert wait_for("x", lambda: 0, 1.0, clock=time.clock, sleep=time.sleep) == 0
    assert time.sleeps == []
