"""helm's post-renderer for a release's patches: Longhorn's mesh settings applied to the chart's manifests,
run as helm runs it (a separate process, manifests on stdin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from picluster.inventory import load_inventory
from picluster.stages.apps.postrender import PostRenderError, merge, render
from picluster.stages.apps.render import Renderer
from picluster.stages.apps.spec import load_releases
from picluster.versions import REPO_ROOT

CHART = """\
---
# Source: longhorn/templates/daemonset-sa.yaml
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: longhorn-manager
  namespace: longhorn-system
spec:
  template:
    metadata:
      annotations: {linkerd.io/inject: enabled}
    spec:
      containers:
      - name: longhorn-manager
        image: longhornio/longhorn-manager:v1.3.0
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: longhorn-ui
  namespace: longhorn-system
spec:
  replicas: 1
  template:
    metadata:
      labels: {app: longhorn-ui}
    spec:
      containers:
      - {name: longhorn-ui, image: longhornio/longhorn-ui:v1.3.0}
---
apiVersion: v1
kind: Service
metadata: {name: longhorn-frontend, namespace: longhorn-system}
spec: {type: ClusterIP}
"""


def longhorn_patches() -> list[dict]:  # type: ignore[type-arg]
    inv = load_inventory(REPO_ROOT / "hosts/inventory.yml")
    renderer = Renderer(inv, load_releases(), secret=lambda name: "x", pki=None)
    return renderer.render(load_releases().get("longhorn")).patches


def test_the_patches_become_part_of_the_charts_manifests() -> None:
    docs = list(yaml.safe_load_all(render(CHART, longhorn_patches())))
    manager, ui, service = docs
    (container,) = manager["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "longhornio/longhorn-manager:v1.3.0"             # the chart's fields stay
    assert container["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                {"name": "POD_IP", "value": "0.0.0.0"}]           # no valueFrom beside it
    assert ui["spec"]["template"]["metadata"] == {"labels": {"app": "longhorn-ui"},
                                                  "annotations": {"linkerd.io/inject": "enabled"}}
    assert ui["spec"]["replicas"] == 1 and service == yaml.safe_load(CHART.split("---")[-1])


def test_merge_follows_strategic_merge_for_these_shapes() -> None:
    assert merge({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}, "a": None}) == {"b": {"c": 2, "d": 3}}
    assert merge([{"name": "x", "v": 1}], [{"name": "y", "v": 2}, {"name": "x", "w": 3}]) == [
        {"name": "x", "v": 1, "w": 3}, {"name": "y", "v": 2}]
    assert merge(["a", "b"], ["c"]) == ["c"]                                        # a plain list is replaced


def test_a_patch_whose_object_the_chart_lacks_fails_naming_it() -> None:
    stray = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "longhorn-gui",
                                                                          "namespace": "longhorn-system"}}
    with pytest.raises(PostRenderError, match=r"^Deployment longhorn-system/longhorn-gui is not among the chart's "
                                              r"manifests"):
        render(CHART, [stray])


def test_as_helm_runs_it_a_process_with_the_manifests_on_stdin(tmp_path: Path) -> None:
    patches = tmp_path / "longhorn.patches.json"
    patches.write_text(json.dumps(longhorn_patches()))
    argv = [sys.executable, "-m", "picluster.stages.apps.postrender", str(patches)]
    done = subprocess.run(argv, input=CHART, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load_all(done.stdout) and "value: 0.0.0.0" in done.stdout
    broken = subprocess.run(argv, input="kind: [", capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and broken.stderr.startswith("picluster post-renderer: ")
    assert len(broken.stderr.strip().splitlines()) == 1
