"""The CI sessions: `nox` runs lint, types, unit and lab; `nox -s infra` checks a real cluster."""

from __future__ import annotations

import os

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def lint(session: nox.Session) -> None:
    """Lint the code with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "picluster", "tests", "benchmarks", "tasks.py", "noxfile.py", *session.posargs)


@nox.session
def types(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    _install(session, "types")
    session.run("mypy", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Run the unit tests: no root, no network beyond 127.0.0.1."""
    _install(session, "test")
    session.install("--no-deps", *nox.project.dependency_groups(PYPROJECT, "real-helm"))
    # the unit tests wait on sshd, subprocesses and HTTP more than on the CPU: a few workers halve the wall time
    session.run("pytest", "-n", "auto", "--maxprocesses", "4", "tests/unit", *session.posargs)


@nox.session
def lab(session: nox.Session) -> None:
    """Run the lab tests: real nspawn nodes over SSH (Linux, root)."""
    if os.geteuid() != 0:
        session.skip("the lab needs root (systemd-nspawn, network namespaces); run as root or in CI")
    _install(session, "test")
    session.run("pytest", "-m", "lab", "tests/lab", *session.posargs)


@nox.session(default=False)
def infra(session: nox.Session) -> None:
    """Run the testinfra gates against the real cluster of an inventory (opt-in)."""
    _install(session, "test")
    inventory = os.environ.get("PICLUSTER_INVENTORY", "hosts/inventory.yml")
    session.run("invoke", "check", "--inventory", inventory, *session.posargs)
