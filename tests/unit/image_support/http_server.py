"""A file server on 127.0.0.1 with HTTP Range support and switchable misbehaviour (truncation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What the server serves and how; the test changes it between requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    truncate_at: int | None = None      # send a full Content-Length but close after this many bytes
    honor_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)   # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served = self.server.served  # type: ignore[attr-defined]
        served.requests.append((self.path, self.headers.get("Range")))
        data = served.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and served.honor_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if served.truncate_at is not None:
            body = body[:max(0, served.truncate_at - start)]
        self.wfile.write(body)
        self.wfile.flush()
        if served.truncate_at is not None:
            self.close_connection = True


@contextmanager
def serve(served: Served) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port); yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
