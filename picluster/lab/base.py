"""The base root filesystem every lab node starts from: Debian stable, built once with debootstrap.

The base is cached outside the clone under <cache>/<recipe digest>/rootfs and rebuilt only when the
recipe (suite, variant, packages, setup script) changes. It is built in a temporary directory and
renamed into place, so a crash never leaves half a base behind; nodes never write to it (each has its
own overlayfs upper layer).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from picluster.lab.common import LabError, pid_cmdline, run

CACHE_ENV = "PICLUSTER_LAB_CACHE"
DEFAULT_CACHE = Path("/var/cache/picluster/lab-base")
BUILD_TIMEOUT = 1200.0

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "procps", "iproute2", "iputils-ping",
    "openssh-server", "sudo", "python3", "cloud-init", "netplan.io", "tzdata", "locales",
    # debootstrap does not resolve virtual packages: python3-cryptography (cloud-init) needs this one.
    "python3-cffi-backend",
)

# Runs inside the new root (chroot) once the packages are in. It makes the base generic: no host keys,
# no machine id, no hostname (cloud-init and systemd give each node its own), and keeps units that only
# wait for hardware or networks a container does not have from slowing the boot. It does not change
# what the stages test: networkd + netplan are what the Pis run, and apt timers would only compete
# with the stages' own apt runs.
SETUP_SCRIPT = r"""
set -eu
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
echo localhost > /etc/hostname
cat > /etc/cloud/cloud.cfg.d/90_picluster_lab.cfg <<'CFG'
# picluster lab: the seed is NoCloud (/var/lib/cloud/seed/nocloud); no other datasource is probed.
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [netplan, networkd]
CFG
systemctl enable systemd-networkd.service
systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-remount-fs.service
cloud-init clean --logs || true
apt-get clean
rm -rf /var/lib/apt/lists/partial
"""


def recipe() -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES), "script": SETUP_SCRIPT,
            "format": 1}


def recipe_digest() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def base_rootfs() -> Path:
    """Where the base for the current recipe lives (it may not be built yet)."""
    return cache_root() / recipe_digest() / "rootfs"


def is_built() -> bool:
    return (base_rootfs().parent / "recipe.json").is_file() and (base_rootfs() / "sbin" / "init").exists()


_SOURCES_DIRS = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def archive_urls(suite: str = SUITE, sources: tuple[Path, ...] = _SOURCES_DIRS) -> dict[str, str]:
    """The host's own Debian archive URLs from its apt sources: {"debian": url, "security": url}.

    "debian" is the first source that carries `suite` itself with component main; "security" the
    first that carries `<suite>-security` (absent when the host has none).
    """
    entries: list[tuple[str, list[str], list[str]]] = []  # (uri, suites, components)
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # drop [options]
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]], words[3:]))
    found: dict[str, str] = {}
    for uri, suites, components in entries:
        if not uri.startswith(("http://", "https://")):
            continue
        if suite in suites and "main" in components:
            found.setdefault("debian", uri.rstrip("/"))
        if f"{suite}-security" in suites:
            found.setdefault("security", uri.rstrip("/"))
    if "debian" not in found:
        raise LabError(f"no apt source for Debian {suite} (main) in /etc/apt/sources.list*; "
                       "add the Debian archive the lab should use")
    return found


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another process holds {root / '.lock'} (building the base?); "
                                   "wait for it or remove the stale lock") from None
                time.sleep(0.5)
        yield


def _remove_stale_builds(root: Path) -> None:
    for p in root.glob(".build-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and pid_cmdline(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)


def ensure(on_line: Callable[[str], None] | None = None) -> tuple[Path, bool]:
    """The base rootfs for the current recipe; build it first when missing. Returns (path, built)."""
    if is_built():
        return base_rootfs(), False
    root = cache_root()
    with _lock(root):
        if is_built():
            return base_rootfs(), False
        _remove_stale_builds(root)
        target = root / recipe_digest()
        if target.exists():  # a base without its recipe.json: never completed
            shutil.rmtree(target)
        build = root / f".build-{recipe_digest()}-{os.getpid()}"
        build.mkdir(parents=True)
        try:
            _build(build / "rootfs", on_line)
            (build / "recipe.json").write_text(json.dumps(recipe(), indent=2) + "\n", encoding="utf-8")
            os.rename(build, target)
        except BaseException:
            log = build / "rootfs" / "debootstrap" / "debootstrap.log"
            if log.is_file():
                shutil.copyfile(log, root / "last-failed-build.log")
            shutil.rmtree(build, ignore_errors=True)
            raise
    return base_rootfs(), True


def _stream(argv: list[str], on_line: Callable[[str], None] | None, timeout: float) -> None:
    """Run argv, passing each output line to on_line; bounded by timeout; LabError on failure."""
    shown = " ".join(argv[argv.index("--") + 1:] if "--" in argv else argv)[:60]
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = [*tail[-19:], line]
                if on_line is not None:
                    on_line(line)
            if time.monotonic() > deadline:
                raise LabError(f"`{shown} ...` did not finish within {timeout:.0f}s")
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    if rc != 0:
        errors = [line for line in tail if line.startswith(("E:", "W:"))] or tail[-1:] or ["no output"]
        raise LabError(f"`{shown} ...` failed (exit {rc}): {errors[-1]}; "
                       f"see {cache_root() / 'last-failed-build.log'}")


def _build(rootfs: Path, on_line: Callable[[str], None] | None) -> None:
    mirror = archive_urls()["debian"]
    # In a private mount namespace: the /proc and /sys debootstrap mounts vanish even if we crash.
    private = ["unshare", "--mount", "--propagation", "private", "--"]
    _stream([*private, "debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
             SUITE, str(rootfs), mirror], on_line, BUILD_TIMEOUT)
    _stream([*private, "chroot", str(rootfs), "/bin/sh", "-c", SETUP_SCRIPT], on_line, 300)
    run(["sync", "-f", str(rootfs)], timeout=120)
