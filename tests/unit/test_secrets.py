"""The controller's secrets store: env override, 0600 files, generated once, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from picluster import secrets


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "picluster" / "secrets"


def test_generated_once_stored_0600_in_a_0700_folder(home: Path) -> None:
    value = secrets.ensure_secret("k3s_token_lab")
    assert len(value) == 64 and secrets.ensure_secret("k3s_token_lab") == value
    path = home / "k3s_token_lab"
    assert path.read_text() == value + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert [p.name for p in home.iterdir()] == ["k3s_token_lab"]      # no temporary file left


def test_the_environment_wins_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICLUSTER_SECRET_K3S_TOKEN_PICLUSTER_LAB", " s3cret \n")
    assert secrets.env_name("k3s_token_picluster-lab") == "PICLUSTER_SECRET_K3S_TOKEN_PICLUSTER_LAB"
    assert secrets.ensure_secret("k3s_token_picluster-lab") == " s3cret "   # only the one line end goes


HAND_SET = [" pa ss ", "a$(reboot)b", "`id`", "it's \"quoted\"", "#not-a-comment", "x=y;z", "trailing space ",
            "\\back\\slash", "ünïcödé", "%s%n", "$HOME", "a'b\"c"]


@pytest.mark.parametrize("value", HAND_SET)
def test_a_secret_set_by_hand_is_kept_exactly(home: Path, value: str) -> None:
    home.mkdir(parents=True)
    path = home / "wifi_password"
    path.write_text(value)                  # written without a line end (printf '%s')
    path.chmod(0o600)
    assert secrets.require_secret("wifi_password") == value
    path.write_text(value + "\n")           # as `echo value > file` writes it: the one line end is not part of it
    assert secrets.require_secret("wifi_password") == value
    path.write_text(value + "\n\n")         # a second line end is a second (empty) line: refused, not stripped
    with pytest.raises(secrets.SecretError, match=r"control character"):
        secrets.require_secret("wifi_password")


@pytest.mark.parametrize("value", ["two\nlines", "cr\r", "tab\there", "nul\x00"])
def test_a_secret_with_a_control_character_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                       value: str) -> None:
    home.mkdir(parents=True)
    path = home / "restic_repository_password"
    path.write_bytes(value.encode() + b"\n")
    path.chmod(0o600)
    with pytest.raises(secrets.SecretError, match=r"holds a control character"):
        secrets.ensure_secret("restic_repository_password")
    with pytest.raises(secrets.SecretError, match=r"control character"):
        secrets.write_secret("other", value)
    if "\x00" in value:
        return  # no environment variable can hold a NUL
    monkeypatch.setenv("PICLUSTER_SECRET_MINIO_ROOT_PASSWORD", value)
    with pytest.raises(secrets.SecretError, match=r"\$PICLUSTER_SECRET_MINIO_ROOT_PASSWORD holds a control"):
        secrets.ensure_secret("minio_root_password")


def test_a_stored_secret_reads_back_exactly(home: Path) -> None:
    for value in HAND_SET:
        secrets.write_secret("minio_root_password", value)
        assert secrets.read_secret("minio_root_password") == value


def test_a_secret_name_with_a_line_end_is_refused() -> None:
    with pytest.raises(secrets.SecretError, match=r"use letters, digits"):
        secrets.secret_path("wifi_password\n")


def test_missing_is_none_or_says_where_to_put_it(home: Path) -> None:
    assert secrets.read_secret("wifi_password") is None
    with pytest.raises(secrets.SecretError, match=r"put it in .*/picluster/secrets/wifi_password \(chmod 600\) "
                                                  r"or set PICLUSTER_SECRET_WIFI_PASSWORD"):
        secrets.require_secret("wifi_password")


def test_a_file_others_can_read_or_an_empty_one_is_refused(home: Path) -> None:
    path = secrets.write_secret("key", "value")
    path.chmod(0o644)
    with pytest.raises(secrets.SecretError, match=r"readable by others; chmod 600"):
        secrets.read_secret("key")
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(secrets.SecretError, match=r"is empty"):
        secrets.ensure_secret("key")


def test_names_that_could_escape_the_folder_are_refused() -> None:
    with pytest.raises(secrets.SecretError, match=r"use letters, digits"):
        secrets.read_secret("../etc/passwd")


def test_hosts_planned_in_parallel_get_one_value(home: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: secrets.ensure_secret("shared"), range(32)))
    assert len(values) == 1 and (home / "shared").read_text().strip() in values
    assert sorted(p.name for p in home.iterdir()) == ["shared"]


def test_another_process_storing_first_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def racing() -> str:          # the other process stores its value while this one generates
        secrets.write_secret("raced", "theirs")
        return "ours"

    assert secrets.ensure_secret("raced", racing) == "theirs"
    assert (home / "raced").read_text() == "theirs\n"
    assert [p.name for p in home.iterdir()] == ["raced"]             # our staged copy is gone


def test_a_stored_secret_is_replaced_whole_and_stays_private(home: Path) -> None:
    secrets.write_secret("rotated", "old")
    path = secrets.write_secret("rotated", "new")
    assert path == home / "rotated" and path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert [p.name for p in home.iterdir()] == ["rotated"]


def test_a_dry_run_reads_but_never_makes_a_secret() -> None:
    secrets.write_secret("there", "kept")
    with secrets.dry_run():
        assert secrets.is_dry_run()
        assert secrets.ensure_secret("there") == "kept"
        assert secrets.ensure_secret("absent") == secrets.NOT_MADE
        with secrets.dry_run(False):                     # an inner "not dry" never undoes the outer dry run
            assert secrets.ensure_secret("absent") == secrets.NOT_MADE
    assert not secrets.is_dry_run() and secrets.read_secret("absent") is None
    assert secrets.ensure_secret("absent") != secrets.NOT_MADE
