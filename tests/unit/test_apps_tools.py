"""The controller's pinned helm: installed into the project's tools folder when missing, checked against its digest.

Downloads are served over real HTTP on 127.0.0.1 (a mirror of the download site, $PICLUSTER_HELM_SITE); the tarball
is built here around the real helm binary (real_helm), so the installed helm is run afterwards.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps_support import FakeHelm
from real_helm import real_helm_binary  # noqa: F401
from stage_support import reference_data, write_inventory

from picluster.inventory import Inventory
from picluster.stages.apps import tools
from picluster.stages.apps.engine import Tools, ensure_helm, run_releases
from picluster.versions import Binary, load_versions

PINNED = load_versions().binaries["helm"]


def tarball(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Site:
    """A download site on 127.0.0.1: path -> bytes; records what was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.asked: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.asked.append(self.path)
                body = site.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Site]:
    s = Site()
    monkeypatch.setenv(tools.SITE_ENV, s.url)
    monkeypatch.setenv(tools.TOOLS_ENV, str(tmp_path / "tools"))
    monkeypatch.delenv(tools.HELM_ENV, raising=False)
    yield s
    s.server.shutdown()


def test_helm_is_pinned_per_architecture_in_versions_yml() -> None:
    assert (PINNED.version, PINNED.where) == ("v3.6.3", "controller")
    assert PINNED.url("arm64") == "https://get.helm.sh/helm-v3.6.3-linux-arm64.tar.gz"
    assert PINNED.sha256 == {"arm64": "6fe647628bc27e7ae77d015da4d5e1c63024f673062ac7bc11453ccc55657713",
                             "amd64": "07c100849925623dc1913209cd1a30f0a9b80a5b4d6ff2153c609d11b043e262"}
    (row,) = [r for r in load_versions().release if r.software == "Helm"]
    assert row.binary == PINNED


def test_the_pinned_build_is_installed_and_runs(site: Site, tmp_path: Path, real_helm_binary: Path) -> None:  # noqa: F811
    helm = real_helm_binary.read_bytes()
    archive = tarball({"linux-amd64/README.md": b"readme", "linux-amd64/helm": helm})
    pinned = Binary("helm", "v3.9.4", "https://get.helm.sh/helm-{version}-linux-{arch}.tar.gz",
                    {"amd64": hashlib.sha256(archive).hexdigest()}, where="controller")
    site.files["/helm-v3.9.4-linux-amd64.tar.gz"] = archive
    path = tools.install_helm(arch="amd64", pinned=pinned)
    assert path == tmp_path / "tools" / "helm-v3.9.4" / "helm"
    assert path.read_bytes() == helm and path.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in path.parent.iterdir()) == ["helm"]          # only the binary is unpacked
    out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("v3.9.4")
    assert site.asked == ["/helm-v3.9.4-linux-amd64.tar.gz"]


def test_a_download_whose_digest_is_not_the_pinned_one_installs_nothing(site: Site, tmp_path: Path) -> None:
    site.files["/helm-v3.6.3-linux-arm64.tar.gz"] = tarball({"linux-arm64/helm": b"#!/bin/sh\necho evil\n"})
    with pytest.raises(tools.ToolError, match=r"sha256 [0-9a-f]{64} is not the pinned 6fe64762.*nothing was installed"):
        tools.install_helm(arch="arm64")
    assert not (tmp_path / "tools").exists()


def test_an_architecture_without_a_pinned_digest_is_refused_before_any_download(site: Site) -> None:
    with pytest.raises(tools.ToolError,
                       match=r"no sha256 pinned for helm v3.6.3 on riscv64: add binaries.helm.sha256.riscv64"):
        tools.install_helm(arch="riscv64")
    with pytest.raises(tools.ToolError, match=r"architecture \(mips\)"):
        tools.controller_arch("mips")
    assert tools.controller_arch("aarch64") == "arm64" and tools.controller_arch("x86_64") == "amd64"
    assert site.asked == []


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    (tmp_path / "inv").mkdir()
    return write_inventory(tmp_path / "inv", reference_data())


def test_a_dry_run_downloads_nothing_and_says_what_it_would_install(site: Site, inv: Inventory, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    detected = Tools(tools.installed_helm(), kubeconfig)
    assert detected.helm is None
    after, step = ensure_helm(detected, dry_run=True)
    assert after == detected and step is not None and step.status == "skipped"
    assert step.reason == (f"skipped: would install helm v3.6.3 at {tmp_path / 'tools' / 'helm-v3.6.3' / 'helm'} "
                           "(a dry run downloads nothing)")
    result = run_releases(inv, tools=detected, dry_run=True)
    assert [s.status for s in result.steps] == ["skipped", "skipped"]
    assert result.steps[1].reason.startswith(f"skipped: helm v3.6.3 is not installed at {tmp_path / 'tools'}")
    assert site.asked == [] and not (tmp_path / "tools").exists()


def test_an_unreachable_site_is_an_explicit_skip_a_wrong_digest_a_failure(site: Site, inv: Inventory,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    monkeypatch.setattr(tools, "controller_arch", lambda machine=None: "arm64")
    monkeypatch.setenv(tools.SITE_ENV, "http://127.0.0.1:9")                        # nothing listens there
    result = run_releases(inv, tools=Tools(None, kubeconfig))
    assert result.status == "ok" and [s.status for s in result.steps] == ["skipped", "skipped"]
    assert result.steps[0].reason.startswith(
        "skipped: cannot download http://127.0.0.1:9/helm-v3.6.3-linux-arm64.tar.gz: ")
    monkeypatch.setenv(tools.SITE_ENV, site.url)
    site.files["/helm-v3.6.3-linux-arm64.tar.gz"] = b"not what was pinned"
    result = run_releases(inv, tools=Tools(None, kubeconfig))
    assert result.status == "failed" and [s.status for s in result.steps] == ["failed"]
    assert "is not the pinned 6fe64762" in result.steps[0].message


def test_without_a_kubeconfig_nothing_is_downloaded(site: Site, inv: Inventory, tmp_path: Path) -> None:
    helm = FakeHelm.install(tmp_path / "h")
    result = run_releases(inv, tools=Tools(None, tmp_path / "kubeconfig"))
    (step,) = result.steps
    assert step.status == "skipped" and step.reason.startswith(f"skipped: no kubeconfig at {tmp_path}")
    assert site.asked == [] and helm.calls() == []


def test_picluster_helm_names_a_helm_to_use_instead(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.HELM_ENV, "/opt/helm/helm")
    assert tools.installed_helm() == "/opt/helm/helm"
