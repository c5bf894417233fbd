"""Tasks that show the pinned versions (k8s/versions.yml)."""

from __future__ import annotations

from invoke import Context, task
from invoke.exceptions import Exit

from picluster.tasks._common import USAGE_ERROR


@task(help={"file": "versions file (default: k8s/versions.yml)",
            "repos": "also list the Helm repos, every pinned chart and the hosts' binaries with their URLs"},
      default=True)
def show(c: Context, file: str | None = None, repos: bool = False) -> None:
    """Print the release table: every component with its pinned version and chart."""
    from rich.console import Console
    from rich.table import Table

    from picluster.versions import DEFAULT_VERSIONS, VersionsError, load_versions

    try:
        v = load_versions(file or DEFAULT_VERSIONS)
    except VersionsError as err:
        raise Exit(f"error: {err}", code=USAGE_ERROR) from None

    console = Console()
    table = Table(title=f"Release table ({v.path.name}); K3S pinned at {v.k3s}", title_justify="left")
    for column in ("Type", "Software", "Version", "Helm chart", "Notes"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Version", "Helm chart"))
    for row in v.release:
        chart = row.chart.label if row.chart else (f"({row.binary.name} binary)" if row.binary else "")
        if row.chart and row.chart.bundled:
            chart += f" ({row.chart.bundled}-bundled)"
        elif row.chart and row.chart.parent:
            chart += f" (via {row.chart.parent})"
        table.add_row(row.type, row.software, row.version, chart, row.notes)
    console.print(table)

    extra = v.extra_charts()
    if extra:
        console.print("Also pinned, not rows of the release table: "
                      + ", ".join(c.label + (f" (via {c.parent})" if c.parent else "") for c in extra))
    if repos:
        charts = Table(title="Helm repos and charts", title_justify="left")
        for column in ("Repo", "URL", "Charts", "Note"):
            charts.add_column(column, overflow="fold")
        for name, url in v.repos.items():
            pinned = ", ".join(c.label for c in v.charts.values() if c.repo == name)
            charts.add_row(name, url, pinned, v.repo_notes.get(name, ""))
        console.print(charts)
        binaries = Table(title="Host binaries (outside Kubernetes)", title_justify="left")
        for column in ("Binary", "Version", "arm64 build", "Checked against"):
            binaries.add_column(column, overflow="fold")
        for b in v.binaries.values():
            check = b.sha256_url("arm64").replace(b.url("arm64"), "the vendor's <build URL>") or \
                f"sha256 pinned for {', '.join(sorted(b.sha256))}"
            binaries.add_row(b.name, b.version, b.url("arm64"), check)
        console.print(binaries)
