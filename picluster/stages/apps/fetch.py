"""One bounded download on the controller: a timeout for the site, a ceiling for the size, one clear reason."""

from __future__ import annotations

import urllib.error
import urllib.request


class FetchFailed(Exception):
    """The download did not succeed; `reason` says why, `unreachable` whether the site never answered."""

    def __init__(self, reason: str, *, unreachable: bool) -> None:
        super().__init__(reason)
        self.reason, self.unreachable = reason, unreachable


def fetch(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """Return the body of `url`, read within `timeout` seconds per step and at most `max_bytes` long."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise FetchFailed(f"HTTP {err.code} {err.reason}", unreachable=False) from None
    except (urllib.error.URLError, OSError) as err:
        raise FetchFailed(str(getattr(err, "reason", None) or err), unreachable=True) from None
    if len(data) > max_bytes:
        raise FetchFailed(f"it sent more than {max_bytes} bytes", unreachable=False)
    return data
