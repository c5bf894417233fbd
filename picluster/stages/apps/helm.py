"""The `helm` CLI, driven with argv lists: repositories, what is deployed, upgrade --install.

Values reach helm only as files (a private temporary folder, removed afterwards); secrets never do -
they are Kubernetes Secrets the charts reference. Every command run is kept (`commands`) for the report.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picluster.stages.apps.spec import Release

DEFAULT_TIMEOUT = "10m"


class HelmError(Exception):
    """helm failed; the message names the command, its exit code and the end of its stderr."""


@dataclass(frozen=True)
class Deployed:
    """A release as `helm list` reports it."""

    name: str
    namespace: str
    chart: str      # name-version, e.g. metallb-0.13.4
    status: str     # deployed, failed, pending-install, ...
    revision: str


@dataclass
class Helm:
    """One helm binary and one cluster (its kubeconfig)."""

    binary: str
    kubeconfig: Path
    timeout: str = DEFAULT_TIMEOUT
    commands: list[str] = field(default_factory=list)

    def run(self, *args: str, timeout: float | None = None) -> str:
        argv = [self.binary, *args, "--kubeconfig", str(self.kubeconfig)]
        self.commands.append(shlex.join(argv))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise HelmError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from None
        except OSError as err:
            raise HelmError(f"cannot run {self.binary}: {err.strerror}") from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise HelmError(f"`{shlex.join(argv)}` exited {proc.returncode}: {tail}")
        return proc.stdout

    def repo_add(self, name: str, url: str) -> None:
        self.run("repo", "add", name, url, "--force-update", timeout=120)

    def repo_update(self) -> None:
        self.run("repo", "update", timeout=300)

    def deployed(self) -> dict[tuple[str, str], Deployed]:
        """Every release in every namespace, by (namespace, name), whatever its status."""
        out = self.run("list", "--all-namespaces", "--all", "--output", "json", timeout=120)
        try:
            rows = json.loads(out or "[]")
        except ValueError:
            raise HelmError(f"helm list printed something that is not JSON: {out[:200]!r}") from None
        found = {}
        for row in rows or []:
            d = Deployed(str(row.get("name")), str(row.get("namespace")), str(row.get("chart")),
                         str(row.get("status")), str(row.get("revision")))
            found[(d.namespace, d.name)] = d
        return found

    def values(self, name: str, namespace: str) -> dict[str, Any]:
        """The user-supplied values of a deployed release (what we passed)."""
        out = self.run("get", "values", name, "--namespace", namespace, "--output", "json", timeout=120)
        try:
            data = json.loads(out or "null")
        except ValueError:
            raise HelmError(f"helm get values {name} printed something that is not JSON") from None
        return data if isinstance(data, dict) else {}

    def upgrade_install(self, release: Release, values_file: Path | None, post_renderer: Path | None = None) -> None:
        chart = release.chart
        args = ["upgrade", "--install", release.name, chart.ref, "--version", chart.version,
                "--namespace", release.namespace, "--create-namespace", "--wait", "--atomic",
                "--timeout", self.timeout]
        if values_file is not None:
            args += ["--values", str(values_file)]
        if post_renderer is not None:
            args += ["--post-renderer", str(post_renderer)]
        self.run(*args, timeout=None)
