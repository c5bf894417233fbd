"""The Invoke namespace: one collection per area, assembled here and exposed by tasks.py."""

from __future__ import annotations

from invoke import Collection


def namespace() -> Collection:
    """Build the root collection. Task modules import heavy libraries inside task bodies only."""
    from picluster.tasks import (
        apps,
        backup,
        check,
        cluster,
        doctor,
        gateway,
        hosts,
        image,
        inventory,
        k3s,
        lab,
        node,
        os_stage,
        restore,
        versions,
    )

    ns = Collection()
    ns.add_collection(Collection.from_module(inventory, name="inventory"))
    ns.add_collection(Collection.from_module(image, name="image"))
    ns.add_collection(Collection.from_module(hosts, name="hosts"))
    ns.add_collection(Collection.from_module(cluster, name="cluster"))
    ns.add_collection(Collection.from_module(os_stage, name="os"))
    ns.add_collection(Collection.from_module(gateway, name="gateway"))
    ns.add_collection(Collection.from_module(k3s, name="k3s"))
    ns.add_collection(Collection.from_module(apps, name="apps"))
    ns.add_collection(Collection.from_module(versions, name="versions"))
    ns.add_collection(Collection.from_module(lab, name="lab"))
    ns.add_collection(Collection.from_module(node, name="node"))
    ns.add_collection(Collection.from_module(backup, name="backup"))
    ns.add_collection(Collection.from_module(restore, name="restore"))
    ns.add_task(check.check)
    ns.add_task(doctor.doctor)
    _pipe_safe(ns)
    ns.configure({"run": {"echo": False}})
    return ns


def _pipe_safe(ns: Collection) -> None:
    """Every task stops quietly (exit 141) when the reader of its output goes away (`| head`)."""
    from picluster.console import pipe_safe

    for t in ns.tasks.values():
        t.body = pipe_safe(t.body)
    for sub in ns.collections.values():
        _pipe_safe(sub)
