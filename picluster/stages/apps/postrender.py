"""Helm's post-renderer for a release's patches: the chart's manifests in on stdin, patched manifests out.

Helm runs it (`--post-renderer`) on every install and upgrade, so the patches (Longhorn's mesh settings) are
part of what helm deploys and stores. A later upgrade then merges cleanly, instead of meeting a live object
patched behind its back (helm would add the chart's `valueFrom` beside the patched `value`, which the API
refuses). Usage: `python -m picluster.stages.apps.postrender PATCHES.json` (a JSON list of patch objects).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import yaml


class PostRenderError(Exception):
    """A patch that cannot be applied to the chart's manifests; the message names it."""


def merge(target: Any, patch: Any) -> Any:
    """`patch` merged into `target` as a strategic-merge patch does for these shapes.

    Mappings merge key by key and a null removes the key; a list of named items (containers, env) merges by
    name, new names appended; anything else is replaced.
    """
    if isinstance(patch, Mapping):
        out = dict(target) if isinstance(target, Mapping) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value)
        return out
    if isinstance(patch, list) and patch and all(isinstance(p, Mapping) and "name" in p for p in patch) \
            and isinstance(target, list):
        out_list = list(target)
        for item in patch:
            at = next((i for i, t in enumerate(out_list) if isinstance(t, Mapping) and t.get("name") == item["name"]),
                      None)
            if at is None:
                out_list.append(merge({}, item))
            else:
                out_list[at] = merge(out_list[at], item)
        return out_list
    return patch


def _same_object(doc: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    meta, want = doc.get("metadata") or {}, patch["metadata"]
    return (doc.get("apiVersion") == patch["apiVersion"] and doc.get("kind") == patch["kind"]
            and meta.get("name") == want["name"]
            and (not meta.get("namespace") or not want.get("namespace") or meta["namespace"] == want["namespace"]))


def render(manifests: str, patches: list[dict[str, Any]]) -> str:
    """The chart's manifests with every patch applied; each patch must find its object."""
    docs = [d for d in yaml.safe_load_all(manifests) if d is not None]
    for patch in patches:
        targets = [i for i, d in enumerate(docs) if isinstance(d, Mapping) and _same_object(d, patch)]
        if not targets:
            meta = patch["metadata"]
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            raise PostRenderError(f"{patch['kind']} {where}{meta['name']} is not among the chart's manifests: "
                                  "check the release's patch file against the pinned chart")
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
        extra_meta = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
        if extra_meta:
            body["metadata"] = extra_meta
        for i in targets:
            docs[i] = merge(docs[i], body)
    return yaml.safe_dump_all(docs, sort_keys=False)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m picluster.stages.apps.postrender PATCHES.json < manifests", file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as f:
            patches = json.load(f)
        sys.stdout.write(render(sys.stdin.read(), patches))
    except (OSError, ValueError, yaml.YAMLError, PostRenderError) as err:
        print(f"picluster post-renderer: {' '.join(str(err).split())}", file=sys.stderr)   # one line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
