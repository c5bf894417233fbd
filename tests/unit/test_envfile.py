"""Environment files: a secret reaches the program exactly as typed, through sh and through systemd alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from picluster.envfile import env_file, quote
from picluster.inventory import load_inventory
from picluster.stages import backup, gateway

REPO = Path(__file__).resolve().parents[2]
HOSTILE = ["a$(touch /tmp/pwned)b", "`id`", "it's", 'say "hi"', "two  spaces", " lead and trail ", "#hash",
           "x # comment?", "back\\slash\\", "\\'", "$HOME", "${HOME}", "a;b&&c|d", "%s%n%%", "=starts=", "'",
           "''", "ünïcødé", "*", "~root", "!event"]
SHELLS = [s for s in ("dash", "bash", "sh") if shutil.which(s)]


def read_with_shell(shell: str, path: Path, names: list[str]) -> list[str]:
    """The values `set -a; . FILE` gives the variables `names`, as the restic and mc scripts read them."""
    script = f'set -a; . "{path}"; set +a; ' + "; ".join(f'printf "%s\\0" "${n}"' for n in names)
    done = subprocess.run([shell, "-c", script], capture_output=True, check=True, env={"PATH": os.defpath})
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_shell_reads_every_hostile_value_exactly(tmp_path: Path, shell: str) -> None:
    path = tmp_path / "test.env"
    names = [f"V{i}" for i in range(len(HOSTILE))]
    path.write_text(env_file(zip(names, HOSTILE, strict=True)))
    assert read_with_shell(shell, path, names) == HOSTILE
    assert not Path("/tmp/pwned").exists()
    assert path.read_text().count("\n") == len(HOSTILE)


@pytest.mark.parametrize("value", ["two\nlines", "cr\r", "tab\t", "nul\x00"])
def test_a_value_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        quote(value)


def test_a_bad_variable_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        env_file([("A-B", "x")])


def test_the_secret_env_files_quote_their_values(tmp_path: Path) -> None:
    password = "p$(reboot)'\" #x `id` "
    files = {
        "restic": backup.restic_env(load_inventory(REPO / "hosts" / "lab.yml"), password, password),
        "minio": backup.minio_conf(password),
        "users": backup.minio_users({"restic": password, "velero": password}),
        "fluent-bit": gateway.fluentbit_env(password),
    }
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        names = [line.split("=", 1)[0] for line in text.splitlines()]
        values = read_with_shell("sh", path, names)
        assert password in values, name
    assert read_with_shell("sh", tmp_path / "minio", ["MINIO_OPTS"]) == [
        f"--address :9091 --console-address :9092 --certs-dir {backup.MINIO_SSL}"]


NSPAWN = shutil.which("systemd-nspawn")
SYSTEMD = Path("/usr/lib/systemd/systemd")


@pytest.mark.skipif(os.geteuid() != 0 or NSPAWN is None or not SYSTEMD.exists(),
                    reason="systemd's own parser needs root, systemd-nspawn and systemd on this machine")
def test_systemd_reads_every_hostile_value_exactly(tmp_path: Path) -> None:
    """systemd's EnvironmentFile= parser in PID 1: this machine's /usr booted in a volatile, networkless container."""
    names = [f"V{i}" for i in range(len(HOSTILE))]
    (tmp_path / "out").mkdir()
    (tmp_path / "test.env").write_text(env_file(zip(names, HOSTILE, strict=True)))
    dump = "; ".join(f'printf "%%s" "$${n}" > /proof/out/{n}' for n in names)  # $$, %%: systemd's own escapes
    (tmp_path / "proof.service").write_text(textwrap.dedent(f"""\
        [Service]
        Type=oneshot
        EnvironmentFile=/proof/test.env
        ExecStart=/usr/bin/sh -c '{dump}'
        ExecStartPost=/usr/bin/systemctl poweroff --no-block
        """))
    (tmp_path / "wants").mkdir()
    (tmp_path / "wants" / "proof.service").symlink_to("/etc/systemd/system/proof.service")
    done = subprocess.run(
        [str(NSPAWN), "-q", "--keep-unit", "--register=no", "--private-network", "--volatile=yes", "-D", "/",
         f"--machine=envproof-{os.getpid()}", f"--bind={tmp_path}:/proof",
         f"--bind-ro={tmp_path}/proof.service:/etc/systemd/system/proof.service",
         f"--bind-ro={tmp_path}/wants:/etc/systemd/system/multi-user.target.wants", "--console=read-only",
         "-b", "systemd.firstboot=off", "systemd.unit=multi-user.target"],
        capture_output=True, text=True, timeout=120, check=False)
    version = subprocess.run([str(SYSTEMD), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    missing = [n for n in names if not (tmp_path / "out" / n).exists()]
    if missing and "proof.service" not in done.stdout:
        pytest.skip(f"the container did not boot here ({version}): {done.stdout[-300:]!r}")
    got = [(tmp_path / "out" / n).read_bytes().decode() for n in names]
    assert got == HOSTILE, version
