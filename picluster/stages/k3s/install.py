"""Installing K3S: the official install script at the pinned version, fetched by the node or from an air-gap bundle.

A node with no k3s binary in reach (not installed, no air-gap bundle, get.k3s.io unreachable from it) gets an
explicit skip with that reason. A node that runs another version is left to the rolling upgrade
(`picluster.stages.k3s.cluster`), which runs this install on one drained node at a time.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from picluster import versions
from picluster.facts import k3s_version
from picluster.inventory import Host, Inventory
from picluster.remote import AnyStep, Change, Command, Decision, Ok, ProbeOutput, StepError, changed_mark
from picluster.stages.k3s.config import (
    ARCHES,
    BIN,
    BINARIES,
    CONFIG,
    KUBELET_CONFIG,
    SYSTEMD_DIR,
    TOKEN_FILE,
    primary_server,
    server_url,
    unit_of,
)
from picluster.state import File
from picluster.state.skip import OnlyIf, skipped
from picluster.versions import Script

q = shlex.quote

LOCAL_STORAGE = "/var/lib/rancher/k3s/server/manifests/local-storage.yaml"   # K3S's packaged local-path
STAGING = "/var/lib/picluster/k3s"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
INSTALL_URL = "https://raw.githubusercontent.com"   # the pinned install script's site (k8s/versions.yml scripts:)
#: The default of the `--airgap` option: the task reads it, never the stage.
AIRGAP_ENV = "PICLUSTER_K3S_AIRGAP"
INSTALL_TIMEOUT_S = 900
SERVER_WAIT_S = 300



@dataclass(frozen=True)
class Airgap:
    """A directory the user filled from a K3S release: k3s / k3s-arm64 / k3s-armhf, the matching
    k3s-airgap-images-<arch>.tar[.gz|.zst], and optionally install.sh (the script get.k3s.io serves)."""

    dir: Path

    @classmethod
    def from_option(cls, value: str | os.PathLike[str] | None) -> Airgap | None:
        """Return the bundle in directory `value` (None: no bundle); ValueError when it is not a directory."""
        if not value:
            return None
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ValueError(f"the air-gap bundle {path} is not a directory (from --airgap or {AIRGAP_ENV})")
        return cls(path.resolve())

    def binary(self, arch: str) -> Path | None:
        """Return the k3s binary for this release architecture, if the bundle has it."""
        path = self.dir / BINARIES.get(arch, f"k3s-{arch}")
        return path if path.is_file() else None

    def images(self, arch: str) -> Path | None:
        """Return the images tarball for this architecture, if the bundle has it."""
        found = sorted(self.dir.glob(f"k3s-airgap-images-{arch}.tar*"))
        return found[0] if found else None

    @property
    def script(self) -> Path | None:
        """Return the bundled install script, if any."""
        path = self.dir / "install.sh"
        return path if path.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StagedFacts:
    """The host's release architecture and the sha256 of each staged file (None: missing)."""

    arch: str
    machine: str
    staged: Mapping[str, str | None]


def staged_path(local: Path) -> str:
    """Return where a bundle file is staged on the node."""
    return f"{STAGING}/{local.name}"


class AirgapStaged:
    """Upload the air-gap bundle's files for the node's architecture to /var/lib/picluster/k3s (by sha256).

    Staged, not installed: the install step (or the rolling upgrade) puts them in place, so a running
    node never switches binaries before it is drained.
    """

    def __init__(self, bundle: Airgap) -> None:
        self.bundle = bundle
        self._hashes: dict[Path, str] = {}

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"air-gap bundle staged in {STAGING}"

    def files(self, arch: str) -> list[Path]:
        """Return the bundle files this architecture needs (binary, images, script)."""
        return [p for p in (self.bundle.binary(arch), self.bundle.images(arch), self.bundle.script) if p]

    def probes(self) -> Mapping[str, str]:
        """The architecture, and the sha256 of every file that could be staged."""
        names = sorted({p.name for arch in set(ARCHES.values()) for p in self.files(arch)})
        paths = " ".join(q(f"{STAGING}/{n}") for n in names)
        return {"arch": "uname -m", "staged": f"sha256sum -- {paths} 2>/dev/null" if paths else "true"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> StagedFacts:
        """Type the outputs."""
        machine = outputs["arch"].stdout.strip()
        staged: dict[str, str | None] = {}
        for line in outputs["staged"].stdout.splitlines():
            digest, _, path = line.partition("  ")
            staged[path.strip()] = digest.strip()
        return StagedFacts(ARCHES.get(machine, ""), machine, staged)

    def digest(self, path: Path) -> str:
        """Return (and remember) a local file's sha256."""
        if path not in self._hashes:
            self._hashes[path] = _sha256(path)
        return self._hashes[path]

    def decide(self, facts: StagedFacts) -> Decision:
        """Upload what is missing or differs."""
        if not facts.arch:
            raise StepError(f"K3S has no release for this architecture ({facts.machine or 'unknown'})")
        if self.bundle.binary(facts.arch) is None:
            raise StepError(f"the air-gap bundle {self.bundle.dir} has no {BINARIES[facts.arch]} for this "
                            f"{facts.machine} host; add it from the K3S release")
        from picluster.state._fs import write_command

        diffs, commands = [], [Command(f"mkdir -p -- {q(STAGING)}")]
        for local in self.files(facts.arch):
            remote = staged_path(local)
            if facts.staged.get(remote) == self.digest(local):
                continue
            diffs.append(f"upload {local} -> {remote} ({local.stat().st_size} bytes)")
            mode = 0o755 if local == self.bundle.binary(facts.arch) else 0o644
            commands.append(write_command(remote, local, mode=mode, owner="root", group="root"))   # streamed
        if not diffs:
            return Ok(f"the bundle's files for {facts.arch} are staged in {STAGING}")
        return Change("\n".join(diffs), commands)



def script_pin() -> Script:
    """The K3S install script pinned in k8s/versions.yml (scripts: k3s-install)."""
    return versions.script("k3s-install")


def wait_for_server(url: str, server: str, seconds: int = SERVER_WAIT_S) -> str:
    """Return shell lines that wait (bounded) until the K3S server's API answers at `url`."""
    ping = q(f"{url}/ping")
    tries = max(1, seconds // 2)
    message = q(f"the K3S server at {url} did not answer within {seconds}s; "
                f"on {server} look at `systemctl status k3s` and `journalctl -u k3s`")
    return "\n".join([
        "i=0",
        f"until curl -ks -o /dev/null --max-time 5 {ping}; do",
        f'  i=$((i + 1)); [ "$i" -lt {tries} ] || {{ printf \'%s\\n\' {message} >&2; exit 1; }}',
        "  sleep 2",
        "done",
    ])


def script_check(pin: Script, path: str) -> str:
    """Return the line that stops unless the script at `path` has the pinned sha256."""
    wrong = q(f"the K3S install script is not the one pinned in k8s/versions.yml (scripts.{pin.name}.sha256 "
              "differs); not run")
    return f"printf '%s  %s\\n' {pin.sha256} {path} | sha256sum -c --quiet - >/dev/null 2>&1 || " \
           f"{{ printf '%s\\n' {wrong} >&2; exit 1; }}"


def install_script(*, role: str, version: str, url: str = "", server: str = "",
                   bundle: Airgap | None = None, arch: str = "", pin: Script | None = None) -> str:
    """Return the command that installs (or upgrades) K3S with the official install script.

    `url` (agents and joining servers): wait until that API answers first. With `bundle`, the staged
    binary and images are put in place and the script runs with INSTALL_K3S_SKIP_DOWNLOAD; else the node
    fetches the script at the pinned version's tag and the script downloads the pinned release. The script
    runs only when its sha256 is the one pinned (`pin`); a bundle's own install.sh is checked when pinned.
    """
    pin = pin or script_pin()
    command = "server" if role == "server" else "agent"
    lines = ["set -e"]
    if url:
        lines.append(wait_for_server(url, server))
    env = [f"INSTALL_K3S_VERSION={q(version)}", "INSTALL_K3S_FORCE_RESTART=true"]
    if bundle is not None:
        binary = bundle.binary(arch)
        if binary is None:
            raise StepError(f"the air-gap bundle {bundle.dir} has no {BINARIES.get(arch, arch)}")
        wrong = q(f"the air-gap bundle's k3s is not {version} (the version pinned in k8s/versions.yml)")
        lines += [
            f"{q(staged_path(binary))} --version | grep -qF {q(f'k3s version {version} ')} "
            f"|| {{ printf '%s\\n' {wrong} >&2; exit 1; }}",
            f"install -m 0755 -o root -g root -- {q(staged_path(binary))} {BIN}",
        ]
        images = bundle.images(arch)
        if images is not None:
            lines += [f"mkdir -p -- {IMAGES_DIR}",
                      f"cp -f -- {q(staged_path(images))} {q(f'{IMAGES_DIR}/{images.name}')}"]
        env.append("INSTALL_K3S_SKIP_DOWNLOAD=true")
    if bundle is not None and bundle.script is not None:
        lines.append(f"script={q(staged_path(bundle.script))}")
        if pin.sha256:
            lines.append(script_check(pin, '"$script"'))
    else:
        if not pin.sha256:
            raise StepError(f"no sha256 pinned for the K3S install script ({pin.url(version)}): add "
                            f"scripts.{pin.name}.sha256 to k8s/versions.yml, confirmed from two independent sources, "
                            "or give an air-gap bundle with its install.sh")
        lines += ['script=$(mktemp)', "trap 'rm -f -- \"$script\"' EXIT",
                  f'curl -sfL --retry 3 -o "$script" {q(pin.url(version))}', script_check(pin, '"$script"')]
    lines.append(f'{" ".join(env)} timeout {INSTALL_TIMEOUT_S} sh "$script" {command}')
    return "\n".join(lines)


@dataclass(frozen=True)
class InstallFacts:
    """What is installed, the unit's presence, the architecture, and whether get.k3s.io answers."""

    version: str | None
    unit: bool
    arch: str
    machine: str
    fetch_ok: bool
    fetch_error: str


class K3sInstall:
    """Install K3S at the pinned version through the official script; nothing when it already is.

    A node that runs another version is left to the rolling upgrade (one node at a time, drained), unless
    `upgrade` is set: the rolling upgrade itself runs this step that way on each node in turn.
    """

    def __init__(self, inv: Inventory, host: Host, version: str, bundle: Airgap | None, *,
                 upgrade: bool = False, selected: frozenset[str] | None = None, pin: Script | None = None) -> None:
        self.inv, self.host, self.version, self.bundle, self.upgrade = inv, host, version, bundle, upgrade
        self.pin = pin or script_pin()
        self.unit = unit_of(host)
        self.selected = selected   # the hosts of this run (--limit); None: all

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"k3s {self.version} ({self.unit})"

    def _ready(self) -> str:
        return (f"{BIN} --version 2>/dev/null | grep -qF {q(f'k3s version {self.version} ')}"
                f" && [ -f {q(f'{SYSTEMD_DIR}/{self.unit}.service')} ]")

    def probes(self) -> Mapping[str, str]:
        """The installed version, the unit file, the architecture; get.k3s.io only when it may be needed."""
        fetch = "true"
        if self.bundle is None or self.bundle.script is None:
            fetch = (f"if {self._ready()}; then exit 0; fi; "
                     "command -v curl >/dev/null || { echo 'curl is not installed'; exit 127; }; "
                     f"curl -sS -o /dev/null --connect-timeout 5 --max-time 10 {INSTALL_URL} 2>&1")
        return {
            "version": f"{BIN} --version",
            "unit": f"test -f {q(f'{SYSTEMD_DIR}/{self.unit}.service')}",
            "arch": "uname -m",
            "fetch": fetch,
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> InstallFacts:
        """Type the outputs."""
        version = k3s_version(outputs["version"].stdout) if outputs["version"].ok else None
        machine = outputs["arch"].stdout.strip()
        fetch = outputs["fetch"]
        error = " ".join(fetch.stdout.split())[:200] or f"exit code {fetch.exit_code}"
        return InstallFacts(version, outputs["unit"].ok, ARCHES.get(machine, ""), machine, fetch.ok,
                            "" if fetch.ok else error)

    def decide(self, facts: InstallFacts) -> Decision:
        """Ok, left to the rolling upgrade, an explicit skip (no binary in reach), or the install."""
        if facts.version == self.version and facts.unit:
            return Ok(f"k3s {self.version} is installed and runs as {self.unit}")
        primary = primary_server(self.inv).name
        if facts.version and facts.unit and facts.version != self.version and not self.upgrade:
            if self.selected is not None and primary not in self.selected:
                return Ok(f"k3s {facts.version} is installed, {self.version} is pinned: the rolling upgrade runs "
                          f"from {primary}, which this run leaves out: add {primary} to --limit to upgrade "
                          f"{self.host.name}")
            return Ok(f"k3s {facts.version} is installed, {self.version} is pinned: the rolling upgrade run from "
                      f"{primary} upgrades the nodes one at a time")
        if not facts.arch:
            raise StepError(f"K3S has no release for this architecture ({facts.machine or 'unknown'})")
        if self.bundle is None and not facts.fetch_ok:
            reason = (f"no k3s binary available on {self.host.name}: k3s is not installed, no air-gap bundle "
                      f"was given ({AIRGAP_ENV} or --airgap DIR), and {INSTALL_URL} is unreachable from it "
                      f"({facts.fetch_error})")
            if facts.version:
                raise StepError(reason.replace("k3s is not installed", f"k3s {facts.version} is installed"))
            return skipped(reason)
        if self.bundle is not None and self.bundle.script is None and not facts.fetch_ok:
            raise StepError(f"the air-gap bundle {self.bundle.dir} has no install.sh and {INSTALL_URL} is "
                            f"unreachable from {self.host.name} ({facts.fetch_error}); add the script "
                            f"(curl -sfL {INSTALL_URL} -o install.sh) to the bundle")
        joins = self.host.name != primary
        script = install_script(role=self.host.role, version=self.version,
                                url=server_url(self.inv) if joins else "", server=primary,
                                bundle=self.bundle, arch=facts.arch, pin=self.pin)
        what = f"upgrade k3s {facts.version} -> {self.version}" if facts.version else f"install k3s {self.version}"
        source = f"air-gap bundle {self.bundle.dir}" if self.bundle else self.pin.url(self.version)
        diff = f"{what} as {self.unit} ({self.host.role}, {facts.arch}, from {source})"
        if joins:
            diff += f", joining {server_url(self.inv)}"
        # the script (re)starts the unit with the current files: no second restart for them in this run
        done = frozenset(changed_mark(p) for p in (CONFIG, KUBELET_CONFIG, TOKEN_FILE))
        return Change(diff, [Command(script)], clears=done)


def local_path_kept_non_default(host: Host) -> list[AnyStep]:
    """On a server: K3S stops re-applying its local-storage manifest, once it has deployed it.

    K3S rewrites and re-applies its packaged manifests at every start, which makes local-path the default
    StorageClass again beside Longhorn after each reboot (k3s-io/k3s#3441): two defaults, and a PVC without
    a class is refused. A `.skip` file beside the manifest stops that; local-path stays, non-default, at the
    version K3S first deployed.
    """
    if host.role != "server":
        return []
    note = "# picluster: K3S does not re-apply local-storage.yaml (local-path stays non-default; Longhorn is)\n"
    return [OnlyIf(File(LOCAL_STORAGE + ".skip", note), f"test -f {q(LOCAL_STORAGE)}",
                   f"K3S has not deployed its local-storage manifest on {host.name} (k3s is not running here)")]
