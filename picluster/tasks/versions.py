"""Tasks that show the pinned versions (k8s/versions.yml) and what this controller runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import USAGE_ERROR

if TYPE_CHECKING:
    from rich.console import Console

    from picluster.controller import Component
    from picluster.versions import Row, Versions


def _chart_cell(row: Row) -> str:
    chart = row.chart.label if row.chart else (f"({row.binary.name} binary)" if row.binary else "")
    if row.chart and row.chart.bundled:
        chart += f" ({row.chart.bundled}-bundled)"
    elif row.chart and row.chart.parent:
        chart += f" (via {row.chart.parent})"
    return chart


def _helm_pin(v: Versions) -> str | None:
    return next((r.version for r in v.release if r.software == "Helm"), None)


def _print_release(console: Console, v: Versions) -> None:
    from rich.table import Table
    from rich.text import Text

    from picluster.console import print_table
    from picluster.controller import REFERENCE_ONLY

    table = Table(title=f"Release table ({v.path.name}); K3S pinned at {v.k3s}", title_justify="left")
    for column in ("Type", "Software", "Version", "Helm chart", "Notes"):
        table.add_column(column, no_wrap=column == "Version")  # a version is never broken over lines
    for row in v.release:
        note = REFERENCE_ONLY.get(row.software)
        style = "dim" if note else ""
        table.add_row(Text(row.type, style), Text(row.software, style), Text(row.version, style),
                      Text(_chart_cell(row), style), Text("; ".join(n for n in (note, row.notes) if n), style))
    print_table(console, table)


def _print_controller(console: Console, found: list[Component]) -> None:
    from rich.table import Table
    from rich.text import Text

    from picluster.console import print_table
    from picluster.controller import NOT_INSTALLED

    table = Table(title="picluster's controller (what this repository runs, not the reference's Ansible)",
                  title_justify="left")
    for column in ("Component", "Installed", "Pinned", "Pinned in"):
        table.add_column(column)
    for c in found:
        installed = Text(c.installed, "red" if c.installed == NOT_INSTALLED else "")
        table.add_row(c.name, installed, c.pinned, c.source)
    print_table(console, table)


def _print_repos(console: Console, v: Versions) -> None:
    from rich.table import Table

    from picluster.console import print_table

    charts = Table(title="Helm repos and charts", title_justify="left")
    for column in ("Repo", "URL", "Charts", "Note"):
        charts.add_column(column)
    for name, url in v.repos.items():
        pinned = ", ".join(c.label for c in v.charts.values() if c.repo == name)
        charts.add_row(name, url, pinned, v.repo_notes.get(name, ""))
    print_table(console, charts)
    binaries = Table(title="Host binaries (outside Kubernetes)", title_justify="left")
    for column in ("Binary", "Version", "arm64 build", "Checked against"):
        binaries.add_column(column, no_wrap=column == "Version")
    for b in v.binaries.values():
        check = f"sha256 pinned for {', '.join(sorted(b.sha256))}" if b.sha256 else "no sha256 pinned: refused"
        binaries.add_row(b.name, b.version, b.url("arm64"), check)
    print_table(console, binaries)


def versions_dict(v: Versions, found: list[Component]) -> dict[str, Any]:
    """The release table, the controller's components, the repos and the hosts' binaries, as JSON data."""
    from picluster.controller import REFERENCE_ONLY

    return {
        "file": str(v.path),
        "k3s": v.k3s,
        "release": [{"type": r.type, "software": r.software, "version": r.version,
                     "chart": r.chart.label if r.chart else None, "chart_repo": r.chart.repo if r.chart else None,
                     "bundled": r.chart.bundled if r.chart else None, "parent": r.chart.parent if r.chart else None,
                     "binary": r.binary.name if r.binary else None, "notes": r.notes,
                     "reference_only": r.software in REFERENCE_ONLY} for r in v.release],
        "controller": [c.to_dict() for c in found],
        "extra_charts": [c.label for c in v.extra_charts()],
        "repos": {name: {"url": url, "note": v.repo_notes.get(name, ""),
                         "charts": [c.label for c in v.charts.values() if c.repo == name]}
                  for name, url in v.repos.items()},
        "binaries": [{"name": b.name, "version": b.version, "url_arm64": b.url("arm64"),
                      "sha256_url_arm64": b.sha256_url("arm64"), "sha256": dict(b.sha256)}
                     for b in v.binaries.values()],
    }


@task(help={"file": "versions file (default: k8s/versions.yml)",
            "repos": "also list the Helm repos, every pinned chart and the hosts' binaries with their URLs",
            "json": "print everything (release table, controller, repos, binaries) as JSON instead"},
      default=True)
def show(c: Context, file: str | None = None, repos: bool = False, json: bool = False) -> None:
    """Print the release table (pinned versions and charts) and what this controller runs beside its pins."""
    from picluster.console import make_console, print_json
    from picluster.controller import components, helm_version
    from picluster.ops.doctor import find_helm
    from picluster.versions import DEFAULT_VERSIONS, VersionsError, load_versions

    try:
        v = load_versions(file or DEFAULT_VERSIONS)
    except VersionsError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None
    found = components(_helm_pin(v), helm=helm_version(find_helm()))
    if json:
        print_json(versions_dict(v, found))
        return
    console = make_console()
    _print_release(console, v)
    extra = v.extra_charts()
    if extra:
        console.print("Also pinned, not rows of the release table: "
                      + ", ".join(c.label + (f" (via {c.parent})" if c.parent else "") for c in extra),
                      highlight=False)
    _print_controller(console, found)
    if repos:
        _print_repos(console, v)
