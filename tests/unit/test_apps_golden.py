"""What each release renders to for the reference inventory (hosts/inventory.yml), as golden files.

The files under apps_support/golden/ are the exact values helm gets, the manifests applied before and after
the release, the patches of the chart's objects, and the keys of its Secrets (their values are placeholders:
secrets never reach a file). A change to a values file, a manifest or the rendering shows up here as a diff;
after checking it, rewrite the files with PICLUSTER_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from picluster.inventory import load_inventory
from picluster.stages.apps.pki import ServerPki
from picluster.stages.apps.render import Renderer
from picluster.stages.apps.spec import Release, load_releases
from picluster.versions import REPO_ROOT

GOLDEN = Path(__file__).parent / "apps_support" / "golden"
PKI = ServerPki("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                "-----BEGIN CERTIFICATE-----\nS3\n-----END CERTIFICATE-----\n", "KEY")
RELEASES = load_releases().ordered()


def rendered(release: Release) -> str:
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    r = Renderer(inv, load_releases(), secret=lambda name: f"<secret {name}>", pki=PKI)
    out = r.render(release, {name: f"<lookup {name}>" for name in release.lookups})
    doc = {"release": release.name, "chart": release.chart.ref, "version": release.chart.version,
           "namespace": release.namespace, "values_hash": out.values_hash, "values": out.values,
           "before": out.before, "manifests": out.manifests, "patches": out.patches,
           "secrets": {f"{ns}/{name}": sorted(data) for (ns, name), data in out.secrets.items()}}
    return yaml.safe_dump(doc, sort_keys=False, width=120)


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_rendered_release_matches_its_golden_file(release: Release) -> None:
    path = GOLDEN / f"{release.name}.yml"
    text = rendered(release)
    if os.environ.get("PICLUSTER_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with PICLUSTER_UPDATE_GOLDEN=1 and check it"
    assert text == path.read_text()
