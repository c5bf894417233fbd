"""The shape of a host the runner needs: a name and how to reach it (matches `picluster.inventory`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SshTargetLike(Protocol):
    """How to reach one host over SSH; `address` may be an alias from ~/.ssh/config."""

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def user(self) -> str: ...

    @property
    def key_file(self) -> Path | None: ...

    @property
    def known_hosts(self) -> Path | None: ...


class HostLike(Protocol):
    """A host of the inventory, as far as the runner is concerned."""

    @property
    def name(self) -> str: ...

    @property
    def ssh(self) -> SshTargetLike: ...
