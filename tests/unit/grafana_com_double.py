"""A test double of grafana.com's dashboard download API, served over real HTTP on 127.0.0.1.

`GET /api/dashboards/<id>/revisions/<revision>/download` answers a small dashboard that declares the
DS_PROMETHEUS input, as grafana.com's exports do; ids in `missing` get a 404. Every path asked is recorded.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = re.compile(r"^/api/dashboards/(\d+)/revisions/(\d+)/download$")


def dashboard(gnet_id: int, revision: int) -> dict[str, Any]:
    return {"__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}],
            "title": f"double {gnet_id} r{revision}", "gnetId": gnet_id, "templating": {"list": []},
            "panels": [{"type": "timeseries", "datasource": "${DS_PROMETHEUS}", "targets": [{"expr": "up"}]}]}


class GrafanaComDouble:
    """Start with `start()`, point $PICLUSTER_GRAFANA_COM at `url`, `stop()` at the end."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.missing: set[int] = set()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double.asked.append(self.path)
                match = ROUTE.match(self.path)
                if match is None or int(match[1]) in double.missing:
                    self.send_error(404, "Not Found")
                    return
                body = json.dumps(dashboard(int(match[1]), int(match[2]))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> GrafanaComDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
