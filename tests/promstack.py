"""A real Prometheus (Debian's ``prometheus`` binary) on loopback, scraping an exporter run by the test.

Shared by tests/demand and tests/reconcile: the fixtures are registered in tests/conftest.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Exporter:
    """Serves ``text`` (Prometheus exposition format) on /metrics; change it between scrapes."""

    text: str = ""
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    ex = Exporter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with ex.lock:
                body = ex.text.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ex.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=ex.server.serve_forever, daemon=True)
    t.start()
    yield ex
    ex.server.shutdown()
    ex.server.server_close()


@dataclass
class Prometheus:
    url: str

    def query(self, q: str) -> list[dict[str, object]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': q})}", timeout=5) as r:
            return list(json.loads(r.read())["data"]["result"])

    def wait_for(self, q: str, n: int, timeout_s: float = 30.0) -> None:
        """Until ``q`` returns ``n`` series (the exporter has been scraped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.query(q)) >= n:
                return
            time.sleep(0.3)
        raise AssertionError(f"prometheus: {q!r} did not return {n} series within {timeout_s} s")


@pytest.fixture
def prometheus(exporter: Exporter, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        pytest.fail(
            "the prometheus binary is missing: install it with `apt-get install -y prometheus` (Debian package)"
        )
    port = _free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs: [{{targets: ['{exporter.address}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
