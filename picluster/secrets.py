"""The controller's local secrets store: one file per secret, mode 0600, never in git, argv or output.

A secret called NAME is read from $PICLUSTER_SECRET_<NAME> (upper case, other characters as `_`) or from
$XDG_CONFIG_HOME/picluster/secrets/NAME (default ~/.config/picluster/secrets/NAME), which must not be
readable by group or others. `ensure_secret` generates a random one on first use and stores it there;
inside `dry_run()` it generates nothing and gives a placeholder (`is_dry_run` tells the other local material).

A secret is kept exactly as set: the file (or the variable) holds the value and at most one final newline
(the line end that `echo value > file` and our own writes add), and nothing else is removed; spaces, quotes,
`$(...)` and `#` are part of it. A value with a control character (a second line, a CR, a tab) is refused,
since it could not be written to a one-line file on a host.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from picluster.localfs import write_atomic

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ENV_PREFIX = "PICLUSTER_SECRET_"
_LOCK = threading.Lock()   # stages plan hosts in parallel threads: one value per secret, made once
# Process-wide, not a contextvar: the hosts of a dry run are planned in worker threads.
_DRY_RUN = False
NOT_MADE = "(made on the first real run)"


class SecretError(Exception):
    """A secret that cannot be read or stored; the message says where it is expected and what to do."""


def secrets_dir() -> Path:
    """Return the store's directory."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "picluster" / "secrets"


def env_name(name: str) -> str:
    """Return the environment variable that overrides the secret `name`."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def secret_path(name: str) -> Path:
    """Return the file that holds the secret `name` (checking the name first)."""
    if not _NAME.fullmatch(name):
        raise SecretError(f"secret name {name!r}: use letters, digits, '_', '-' and '.'")
    return secrets_dir() / name


def read_secret(name: str) -> str | None:
    """Return the secret exactly as set, or None when neither the variable nor the file exists.

    Of the variable or the file only one final newline is removed. A file readable by others, an empty value
    or one with a control character is an error that says how to fix it.
    """
    path = secret_path(name)
    env = env_name(name)
    if os.environ.get(env, "").removesuffix("\n"):
        return _checked(name, os.environ[env].removesuffix("\n"), f"${env}")
    try:
        mode = path.stat().st_mode
        with path.open(encoding="utf-8", newline="") as f:  # newline="": a CR is kept, to be refused
            value = f.read().removesuffix("\n")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise SecretError(f"secret {name!r}: {path} is not UTF-8 text; write the value as UTF-8") from None
    except OSError as err:
        raise SecretError(f"secret {name!r}: cannot read {path}: {err.strerror}") from None
    if mode & 0o077:
        raise SecretError(f"secret {name!r}: {path} is readable by others; chmod 600 {path}")
    if not value:
        raise SecretError(f"secret {name!r}: {path} is empty; remove it to have a new one made, or fill it")
    return _checked(name, value, str(path))


def _checked(name: str, value: str, where: str) -> str:
    """`value`, unless it has a control character (a second line, a CR, a tab), which no host file could hold."""
    if _CONTROL.search(value):
        raise SecretError(f"secret {name!r}: {where} holds a control character (a second line, a CR or a tab); "
                          "a secret is one line of printable characters: rewrite it")
    return value


def write_secret(name: str, value: str) -> Path:
    """Store `value` as the secret `name` (0600, directory 0700), replacing it atomically; return the file."""
    path = secret_path(name)
    if not value:
        raise SecretError(f"secret {name!r}: an empty value cannot be stored")
    _checked(name, value, "the value given")
    write_atomic(path, value + "\n", 0o600, dir_mode=0o700)
    return path


def _create_secret(name: str, value: str) -> str:
    """Store `value` unless the secret appeared meanwhile (another process): the first one stored wins."""
    path = secret_path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # NOTE: staged under a unique name, then hard-linked: unlike a rename, a link never replaces a secret
    # another process stored first, and a reader never sees the file before its value is whole.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
        os.link(tmp, path)
    except FileExistsError:
        existing = read_secret(name)
        if existing is None:
            raise SecretError(f"secret {name!r}: {path} appeared but cannot be read") from None
        return existing
    finally:
        os.unlink(tmp)
    return value


def random_token(nbytes: int = 32) -> str:
    """Return a new random secret: 2 × nbytes hex digits."""
    return _random.token_hex(nbytes)


@contextmanager
def dry_run(active: bool = True) -> Iterator[None]:
    """While active, nothing local is made on first use: a missing secret reads as a placeholder."""
    global _DRY_RUN
    before, _DRY_RUN = _DRY_RUN, active or _DRY_RUN
    try:
        yield
    finally:
        _DRY_RUN = before


def is_dry_run() -> bool:
    """True inside `dry_run()`: code that makes local material on first use (the CA) must not."""
    return _DRY_RUN


def ensure_secret(name: str, generate: Callable[[], str] = random_token) -> str:
    """Return the secret `name`, generating and storing it (0600) on first use; its value is never printed.

    In a dry run a missing secret is not made: the placeholder NOT_MADE stands for it.
    """
    with _LOCK:
        value = read_secret(name)
        if value is not None:
            return value
        if _DRY_RUN:
            return NOT_MADE
        value = generate()
        if not value or _CONTROL.search(value):
            raise SecretError(f"secret {name!r}: the generator made an empty value or one with a control character")
        return _create_secret(name, value)


def require_secret(name: str) -> str:
    """Return the secret `name`, or fail saying where to put it."""
    value = read_secret(name)
    if value is None:
        raise SecretError(f"secret {name!r} not found: put it in {secret_path(name)} (chmod 600) "
                          f"or set {env_name(name)}")
    return value
