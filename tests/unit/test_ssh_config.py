"""The gates' ssh_config: a key or known_hosts path is one argument naming that file, never a second line."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
from stage_support import reference_data, write_inventory

from picluster.inventory import InventoryError
from picluster.ops.check import GateError, _ssh_path, ssh_config

PATHS = ["keys/id ed25519", 'keys/say "hi"', "keys/100%d%%", "keys/back\\slash", "keys/it's #1", "keys/a;b $x"]


@pytest.mark.parametrize("name", PATHS)
def test_a_hostile_but_valid_path_is_one_argument(tmp_path: Path, name: str) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client here")
    data = copy.deepcopy(reference_data())
    data["vars"]["ssh_key_file"] = name
    data["vars"]["ssh_known_hosts"] = name + ".known"
    inv = write_inventory(tmp_path, data)
    text = ssh_config(list(inv.hosts.values()), tmp_path / "ctl")
    clean = ssh_config(list(write_inventory(tmp_path, reference_data(), "clean.yml").hosts.values()), tmp_path)
    assert text.count("\n") == clean.count("\n") + 3 * len(inv.hosts)   # IdentityFile, IdentitiesOnly, known
    config = tmp_path / "ssh_config"
    config.write_text(text)
    shown = subprocess.run(["ssh", "-G", "-F", str(config), "node1"], capture_output=True, text=True, check=True)
    options = dict(line.split(" ", 1) for line in shown.stdout.splitlines())
    key, known = str(tmp_path / name), str(tmp_path / name) + ".known"
    assert options["identityfile"] == key.replace("%", "%%")    # printed before ssh expands its %-tokens
    assert options["userknownhostsfile"] == known               # printed expanded: the file itself
    assert options["hostname"] == "10.0.0.11" and options["user"] == "picluster"


@pytest.mark.parametrize("name", ["keys/id\nProxyCommand sh", "keys/id\r", "keys/${HOME}", "keys/\x00"])
def test_a_path_that_could_add_a_line_or_expand_is_refused(tmp_path: Path, name: str) -> None:
    data = copy.deepcopy(reference_data())
    data["vars"]["ssh_key_file"] = name
    with pytest.raises(InventoryError, match=r"vars\.ssh_key_file: expected a file path without control characters"):
        write_inventory(tmp_path, data)
    with pytest.raises(GateError, match=r"cannot go into ssh_config"):
        _ssh_path(Path("/tmp") / name)
