"""A test double of Minio for the lab: moto's S3 server, in the netns of the `s3` host, with Minio's certificate.

moto pins python-dateutil below 3 and the kubernetes client wants 3 or later, so moto cannot share the test
venv: it gets a venv of its own, made once from the pin of pyproject.toml's dependency group `s3-double` and
cached outside the clone (/var/cache/picluster/s3-double/<recipe sha>).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PICLUSTER_CACHE_DIR", "/var/cache/picluster")) / "s3-double"
START_TIMEOUT_S = 60.0


def requirements() -> list[str]:
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    return [str(r) for r in groups["s3-double"]]


def server_python() -> Path:
    """The python of the cached venv that has moto's server (made on first use)."""
    reqs = requirements()
    recipe = hashlib.sha256(json.dumps([reqs, sys.version]).encode()).hexdigest()[:16]
    venv = CACHE / recipe
    python = venv / "bin" / "python"
    if python.exists():
        return python
    tmp = CACHE / f".{recipe}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *reqs], check=True, capture_output=True, text=True, timeout=600)
        tmp.rename(venv)   # a venv's python finds its packages from pyvenv.cfg beside it: a rename is fine
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def make_bucket(address: str, port: int, bucket: str) -> None:
    """Create a bucket, as the stage's provisioning does on Minio (the double checks no signature)."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"https://{address}:{port}/{bucket}", method="PUT", data=b"")
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        assert resp.status == 200, resp.status


@contextmanager
def serving(netns: str, address: str, port: int, cert: Path, key: Path, log: Path,
            buckets: tuple[str, ...] = ()) -> Iterator[int]:
    """Run the S3 double at address:port inside `netns` (TLS with cert/key), with `buckets` made; yield its PID;
    stop it after. Requests are path-style whatever the Host (Minio's way, not AWS's virtual hosts)."""
    python = server_python()
    env = {**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    with log.open("wb") as out:
        argv = ["ip", "netns", "exec", netns, str(python), "-m", "moto.server", "-H", address, "-p", str(port),
                "-c", str(cert), "-k", str(key)]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the S3 double exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 double did not listen on {address}:{port} in {START_TIMEOUT_S:.0f}s; "
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        for bucket in buckets:
            make_bucket(address, port, bucket)
        yield proc.pid
    finally:
        proc.terminate()       # ip netns exec execs the server: this PID is moto's
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
