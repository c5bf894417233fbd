"""Where the platform must match the reference's own roles: names and labels a user of the reference relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stage_support import reference_data, write_inventory

from picluster.stages import os as os_stage
from picluster.state.storage import DataVolume
from picluster.versions import REPO_ROOT

CRDS = REPO_ROOT.parent / "shared" / "crds"


def test_the_data_volume_is_the_references_lv(tmp_path: Path) -> None:
    """ricsanfre.storage with vars/dedicated_disks/local_storage.yml: LV vg_local_lv_storage of VG vg_local."""
    inv = write_inventory(tmp_path, reference_data())
    node = next(h for h in inv.hosts.values() if h.data_partition is not None)
    (volume,) = [s for s in os_stage.host_steps(inv, node) if isinstance(s, DataVolume)]
    assert (volume.vg, volume.lv, volume.mountpoint) == ("vg_local", "vg_local_lv_storage", "/storage")
    assert volume.fstab_line == "/dev/vg_local/vg_local_lv_storage /storage ext4 defaults 0 2"


def recurring_job() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO_ROOT / "k8s" / "longhorn" / "recurring-job.yml").read_text())
    (job,) = [d for d in docs if d and d["kind"] == "RecurringJob"]
    return job


def test_the_longhorn_backup_job_labels_its_backups_as_the_references() -> None:
    job = recurring_job()
    assert job["spec"] == {"cron": "0 5 * * *", "task": "backup", "groups": ["default"], "retain": 2,
                           "concurrency": 2, "labels": {"type": "full", "schedule": "daily"}}


def test_the_longhorn_backup_job_fits_the_pinned_crd() -> None:
    path = CRDS / "longhorn-1.3.0" / "recurringjobs.longhorn.io.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    crd = yaml.safe_load(path.read_text())
    job = recurring_job()
    group, version = job["apiVersion"].split("/")
    assert crd["spec"]["group"] == group
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions[version]["served"]             # v1beta1 as the reference writes it, converted to storage
    (stored,) = [v for v in versions.values() if v["storage"]]
    spec = stored["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(job["spec"]) <= set(spec)
    assert spec["labels"]["type"] == "object" and spec["labels"]["additionalProperties"]["type"] == "string"
    assert all(isinstance(v, str) for v in job["spec"]["labels"].values())
