"""The one YAML reader: our files read as plain safe YAML would, hostile ones refused in one line, quickly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from yaml_support import assert_refused, hostile

from picluster import yamlfile
from picluster.yamlfile import read_yaml

REPO = Path(__file__).resolve().parents[2]
OURS = ["hosts/inventory.yml", "hosts/lab.yml", "k8s/versions.yml", "k8s/releases.yml"]


class Refused(Exception):
    pass


@pytest.fixture(params=["libyaml", "python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs on libyaml's parser (where PyYAML has it) and on PyYAML's own."""
    if request.param == "python":
        monkeypatch.setattr(yamlfile, "_EVENTS", yamlfile._PyEvents)
    return str(request.param)


def load(path: Path) -> object:
    return read_yaml(path, "test", Refused)


@pytest.mark.parametrize("name", OURS)
def test_our_files_read_as_safe_yaml_reads_them(loader: str, name: str) -> None:
    path = REPO / name
    assert load(path) == yaml.safe_load(path.read_text(encoding="utf-8"))


def test_plain_values_anchors_and_an_empty_file(loader: str, tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    path.write_text("a: &x 1\nb: [yes, 2.5, null, '07']\n1: c\n")
    assert load(path) == {"a": 1, "b": [True, 2.5, None, "07"], 1: "c"}
    path.write_text("")
    assert load(path) is None


@hostile("content, expected")
def test_a_hostile_file_is_refused_in_one_line(loader: str, tmp_path: Path, content: bytes, expected: str) -> None:
    assert_refused(load, tmp_path / "f.yml", content, expected, Refused)


@pytest.mark.parametrize(("content", "expected"), [
    (b"a: [1\n", r"line 2: not valid YAML: while parsing a flow sequence: .*; fix the YAML syntax$"),
    (b"a: \x07\n", r"line 1: not valid YAML: .*characters are not allowed; fix the YAML syntax$"),
    (b"a\n---\nb\n", r"line 2: not valid YAML: expected a single document.*; fix the YAML syntax$"),
    (b"a:\n  <<: {x: 1}\n", r"line 2: merge keys \(<<\) are not accepted here"),
])
def test_a_syntax_error_names_its_line(loader: str, tmp_path: Path, content: bytes, expected: str) -> None:
    assert_refused(load, tmp_path / "f.yml", content, expected, Refused)


def test_a_missing_file_or_a_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"nope\.yml: no such widget file; make one$"):
        read_yaml(tmp_path / "nope.yml", "widget", Refused, "make one")
    with pytest.raises(Refused, match=r"nope\.yml: no such widget file$"):
        read_yaml(tmp_path / "nope.yml", "widget", Refused)
    with pytest.raises(Refused, match=rf"^{tmp_path}: cannot read: Is a directory$"):
        read_yaml(tmp_path, "widget", Refused)
