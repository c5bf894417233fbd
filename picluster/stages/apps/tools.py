"""The controller's own tools: Helm at the version pinned in k8s/versions.yml, in the project's tools folder.

The folder is $PICLUSTER_TOOLS_DIR, else `.tools/` at the repository's root (never in git); helm lives at
`<folder>/helm-<version>/helm`. When it is missing, the apps stage installs it: the pinned build for the
controller's architecture (`binaries.helm`: the URL there, or the same path on a mirror of that site given in
$PICLUSTER_HELM_SITE), the tarball checked against the sha256 pinned there before anything is unpacked, then only
`linux-<arch>/helm` written (mode 0755, atomically). A dry run downloads nothing. $PICLUSTER_HELM names a helm to
use instead (an air-gapped controller); it is used as it is.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import tarfile
from pathlib import Path

from picluster.localfs import write_atomic
from picluster.stages.apps.fetch import FetchFailed, fetch
from picluster.versions import REPO_ROOT, Binary, binary

TOOLS_ENV = "PICLUSTER_TOOLS_DIR"
HELM_ENV = "PICLUSTER_HELM"
SITE_ENV = "PICLUSTER_HELM_SITE"
TIMEOUT_S = 60.0
MAX_BYTES = 128 * 1024 * 1024
MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ToolError(Exception):
    """A tool that cannot be installed; the message says which, why and what to do."""


class Unreachable(ToolError):
    """The download site cannot be reached from this controller (no internet): an explicit skip, not a failure."""


def tools_dir() -> Path:
    """The project's tools folder: $PICLUSTER_TOOLS_DIR, else <repo>/.tools."""
    return Path(os.environ.get(TOOLS_ENV) or REPO_ROOT / ".tools").expanduser()


def pinned_helm() -> Binary:
    """Helm as pinned in k8s/versions.yml (`binaries.helm`)."""
    return binary("helm")


def helm_path(folder: Path | None = None, pinned: Binary | None = None) -> Path:
    """Where the pinned helm lives in the tools folder."""
    pinned = pinned or pinned_helm()
    return (folder or tools_dir()) / f"helm-{pinned.version}" / "helm"


def installed_helm(folder: Path | None = None) -> str | None:
    """The helm to use: $PICLUSTER_HELM, else the pinned one in the tools folder; None when neither is there."""
    if os.environ.get(HELM_ENV):
        return os.environ[HELM_ENV]
    path = helm_path(folder)
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def controller_arch(machine: str | None = None) -> str:
    """This controller's architecture as the download URLs name it (amd64, arm64)."""
    machine = machine or platform.machine()
    try:
        return MACHINES[machine.lower()]
    except KeyError:
        raise ToolError(f"no helm build is pinned for this controller's architecture ({machine}); "
                        f"set ${HELM_ENV} to a helm you installed yourself") from None


def download_url(pinned: Binary, arch: str) -> str:
    """The build's URL, on the mirror of $PICLUSTER_HELM_SITE when set."""
    url = pinned.url(arch)
    mirror = os.environ.get(SITE_ENV)
    if not mirror:
        return url
    site = "/".join(url.split("/")[:3])
    return mirror.rstrip("/") + url[len(site):]


def _download(url: str) -> bytes:
    try:
        return fetch(url, timeout=TIMEOUT_S, max_bytes=MAX_BYTES)
    except FetchFailed as err:
        if not err.unreachable:
            raise ToolError(f"cannot download {url}: {err.reason}") from None
        raise Unreachable(f"cannot download {url}: {err.reason}; the controller needs to reach that site (or a "
                          f"mirror in ${SITE_ENV}), or set ${HELM_ENV} to a helm you installed yourself") from None


def _member(tarball: bytes, name: str, url: str) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            try:
                info = tar.getmember(name)
            except KeyError:
                raise ToolError(f"{url} has no {name}") from None
            if not info.isfile():
                raise ToolError(f"{url}: {name} is not a regular file")
            f = tar.extractfile(info)
            assert f is not None
            return f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ToolError(f"{url} is not a gzipped tarball: {err}") from None


def install_helm(folder: Path | None = None, *, arch: str | None = None, pinned: Binary | None = None) -> Path:
    """Download the pinned helm, check its sha256, put `helm` into the tools folder; its path.

    Nothing is written unless the tarball's digest is the pinned one.
    """
    pinned = pinned or pinned_helm()
    arch = arch or controller_arch()
    want = pinned.sha256.get(arch)
    if not want:
        raise ToolError(f"no sha256 pinned for helm {pinned.version} on {arch}: add binaries.{pinned.name}.sha256."
                        f"{arch} to k8s/versions.yml (from the release's checksums)")
    url = download_url(pinned, arch)
    tarball = _download(url)
    got = hashlib.sha256(tarball).hexdigest()
    if got != want:
        raise ToolError(f"{url}: sha256 {got} is not the pinned {want}; nothing was installed")
    path = helm_path(folder, pinned)
    write_atomic(path, _member(tarball, f"linux-{arch}/helm", url), mode=0o755)
    return path
