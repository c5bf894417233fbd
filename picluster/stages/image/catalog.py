"""The image catalog (hosts/images.yml): which Ubuntu image a host gets, from where, with which sha256."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from picluster.stages.image import ImageError

CATALOG_NAME = "images.yml"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageEntry:
    """One image: a catalog entry, or what `--image URL|PATH` names for one run."""

    name: str
    url: str
    sha256: str | None
    version: str = ""
    usb_boot_fix: bool = False

    @property
    def is_remote(self) -> bool:
        return urlparse(self.url).scheme in ("http", "https")


@dataclass(frozen=True)
class Catalog:
    path: Path
    default: str
    images: dict[str, ImageEntry]

    def get(self, name: str | None) -> ImageEntry:
        """The entry called `name` (the default when None); ImageError naming the known ones."""
        key = name or self.default
        if key not in self.images:
            raise ImageError(f"{self.path}: no image {key!r}; known: {', '.join(self.images)}")
        return self.images[key]


def check_sha256(value: str, where: str) -> str:
    """A sha256 as 64 lowercase hex digits (upper case accepted); ImageError otherwise."""
    text = value.strip().lower()
    if not _SHA256.match(text):
        raise ImageError(f"{where}: {value!r} is not a sha256 (64 hex digits)")
    return text


def catalog_path(inventory_path: Path) -> Path:
    """The catalog beside the inventory (hosts/images.yml for hosts/inventory.yml)."""
    return inventory_path.parent / CATALOG_NAME


def load_catalog(path: Path) -> Catalog:
    """Read and validate the catalog; one-line ImageError on any problem."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImageError(f"{path}: no image catalog; create it (see hosts/images.yml) or pass --image") from None
    except (OSError, yaml.YAMLError) as err:
        raise ImageError(f"{path}: cannot read the image catalog: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict) or not data["images"]:
        raise ImageError(f"{path}: expected `images:` mapping names to {{url, sha256, version}}")
    images = {}
    for name, e in data["images"].items():
        where = f"{path}: images.{name}"
        if not isinstance(e, dict) or not isinstance(e.get("url"), str):
            raise ImageError(f"{where}: expected a mapping with url, sha256 (or null), version")
        unknown = sorted(set(e) - {"url", "sha256", "version", "usb_boot_fix"})
        if unknown:
            raise ImageError(f"{where}.{unknown[0]}: unknown key; allowed: url, sha256, version, usb_boot_fix")
        if urlparse(e["url"]).scheme != "https":
            raise ImageError(f"{where}.url: expected an https URL, got {e['url']!r}")
        sha = e.get("sha256")
        if sha is not None and not isinstance(sha, str):
            raise ImageError(f"{where}.sha256: expected 64 hex digits or null")
        images[str(name)] = ImageEntry(
            name=str(name), url=e["url"],
            sha256=check_sha256(sha, f"{where}.sha256") if sha is not None else None,
            version=str(e.get("version", "")), usb_boot_fix=bool(e.get("usb_boot_fix", False)))
    default = str(data.get("default") or next(iter(images)))
    if default not in images:
        raise ImageError(f"{path}: default: {default!r} is not one of the images ({', '.join(images)})")
    return Catalog(path=path, default=default, images=images)


def override(image: str, sha256: str | None, usb_boot_fix: bool) -> ImageEntry:
    """The entry for `--image URL|PATH` (with `--sha256`): a URL needs its sha256, a file may go without."""
    sha = check_sha256(sha256, "--sha256") if sha256 else None
    parsed = urlparse(image)
    if parsed.scheme in ("http", "https"):
        if sha is None:
            raise ImageError(f"--image {image}: a downloaded image needs --sha256 (from the release's SHA256SUMS)")
        name = Path(parsed.path).name or "image"
        return ImageEntry(name=name, url=image, sha256=sha, usb_boot_fix=usb_boot_fix)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ImageError(f"--image {image}: expected an http(s) URL or a local file path")
    path = Path(image).expanduser()
    if not path.is_file():
        raise ImageError(f"--image {image}: no such file")
    return ImageEntry(name=path.name, url=str(path.resolve()), sha256=sha, usb_boot_fix=usb_boot_fix)
