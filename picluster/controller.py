"""What this controller runs: picluster's own control components, installed beside pinned.

The reference drives the cluster with Ansible from `pimaster`; picluster is Python (pinned by pyproject.toml)
with Invoke, Fabric and Paramiko, the kubernetes client, testinfra for the checks, and Helm (pinned by the
release table in k8s/versions.yml) for the apps stage.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
NOT_INSTALLED = "not installed"

# (shown name, distribution name) of the Python side, in the order of a run: tasks, SSH, checks, API.
DISTRIBUTIONS = (
    ("Invoke", "invoke"),
    ("Fabric", "fabric"),
    ("Paramiko", "paramiko"),
    ("testinfra", "pytest-testinfra"),
    ("kubernetes client", "kubernetes"),
)
# Rows of the reference's release table that picluster does not run, and what it runs instead.
REFERENCE_ONLY = {
    "Ansible": "reference only: picluster runs Invoke and Fabric instead (see the controller table)",
}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


@dataclass(frozen=True)
class Component:
    """One control component: what is installed here, what the repository pins, and where the pin is."""

    name: str
    installed: str
    pinned: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(line: str) -> tuple[str, str]:
    """'invoke>=2.2,<3' -> ('invoke', '>=2.2,<3'); names normalized, markers dropped."""
    m = _REQUIREMENT.match(line)
    if m is None:
        return normalize(line.strip()), ""
    return normalize(m.group(1)), m.group(3).replace(" ", "")


def project_pins(pyproject: Path = PYPROJECT) -> tuple[str, dict[str, str], str]:
    """requires-python, the dependencies' specifiers by name, and where they were read: pyproject.toml in a
    checkout, else the installed picluster distribution's metadata."""
    if pyproject.is_file():
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        deps = dict(parse_requirement(d) for d in project.get("dependencies", []))
        return str(project.get("requires-python", "")), deps, pyproject.name
    from importlib import metadata

    try:
        meta = metadata.metadata("picluster")
    except metadata.PackageNotFoundError:
        return "", {}, "nowhere (no pyproject.toml, picluster not installed)"
    deps = dict(parse_requirement(d) for d in metadata.requires("picluster") or [] if "extra ==" not in d)
    return str(meta["Requires-Python"] or ""), deps, "picluster's metadata"


def installed_version(distribution: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def helm_version(helm: str | None = None, timeout: float = 5.0) -> str:
    """`helm version --short` of `helm` (default: the one on PATH), e.g. 'v3.6.3+gd506314', or "not installed" /
    why it failed."""
    helm = helm or shutil.which("helm")
    if helm is None:
        return NOT_INSTALLED
    try:
        out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unusable ({type(err).__name__})"
    if out.returncode != 0:
        return f"unusable (exit {out.returncode})"
    return out.stdout.strip() or "unknown"


def same_release(installed: str, pinned: str) -> bool:
    """'v3.6.3+gd506314' is the pinned 'v3.6.3'."""
    return installed.split("+")[0].lstrip("v") == pinned.split("+")[0].lstrip("v")


def components(helm_pinned: str | None, *, helm: str | None = None) -> list[Component]:
    """Python, the Python distributions picluster depends on, and Helm (`helm`: its `helm version`, default
    asked of the one on PATH): installed beside pinned."""
    python, pins, source = project_pins()
    found = [Component("Python", platform.python_version(), python or "-", f"{source} requires-python")]
    for shown, dist in DISTRIBUTIONS:
        found.append(Component(shown, installed_version(dist), pins.get(normalize(dist), "-"), source))
    found.append(Component("Helm", helm if helm is not None else helm_version(), helm_pinned or "-",
                           "k8s/versions.yml (release table)"))
    return found


def helm_pin() -> str | None:
    """The Helm version of the release table (k8s/versions.yml), or None when it cannot be read."""
    from picluster.versions import VersionsError, load_versions

    try:
        release = load_versions().release
    except VersionsError:
        return None
    return next((r.version for r in release if r.software == "Helm"), None)
