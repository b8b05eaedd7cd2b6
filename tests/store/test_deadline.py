"""Time bounds: every S3 request ends within one documented deadline, with botocore's retries only.

Before: botocore's 5 attempts (60 s read timeout each) ran inside a whole-file retry loop of 3, so
one object could take about 15 minutes against a server that never answers. The server here is a
loopback socket that accepts connections and never answers; small timeouts keep the test short,
and the same formula (``request_deadline_s``) gives the documented default.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tritonops.config import RegionConfig
from tritonops.errors import StoreError
from tritonops.store import s3 as s3mod
from tritonops.store.s3 import S3Store, request_deadline_s

READ_S, CONNECT_S, ATTEMPTS = 1.0, 1.0, 3


class StallingServer:
    """Accepts every connection, reads nothing, answers nothing, until closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def stalling(monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingServer]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    srv = StallingServer()
    yield srv
    srv.close()


def store_for(srv: StallingServer) -> S3Store:
    rc = RegionConfig(bucket="s3://stall/prefix", endpoint_url=f"http://127.0.0.1:{srv.port}")
    return S3Store(rc, "stall-region", max_workers=2, connect_timeout_s=CONNECT_S, read_timeout_s=READ_S,
                   max_attempts=ATTEMPTS)  # fmt: skip


@pytest.mark.parametrize("op", ["get", "head", "list", "put_bytes", "delete"])
def test_each_operation_fails_within_the_documented_deadline(stalling: StallingServer, op: str) -> None:
    st = store_for(stalling)
    calls = {
        "get": lambda: st.get("m/1/model.py"),
        "head": lambda: st.head("m/1/model.py"),
        "list": lambda: st.list("m/"),
        "put_bytes": lambda: st.put_bytes("m/config.pbtxt", b"x" * 100, "0" * 64),
        "delete": lambda: st.delete(["m/1/model.py"]),
    }
    t0 = time.monotonic()
    with pytest.raises(StoreError) as e:
        calls[op]()
    dt = time.monotonic() - t0
    st.close()
    assert dt <= request_deadline_s(CONNECT_S, READ_S, ATTEMPTS) == 49.0
    # Every attempt ran into its read timeout, and no loop around botocore added more attempts.
    assert ATTEMPTS * READ_S - 0.2 <= dt < (ATTEMPTS + 1) * (READ_S + s3mod.EXPECT_CONTINUE_S) + 2.0, dt
    assert stalling.accepted <= ATTEMPTS, stalling.accepted
    msg = str(e.value)
    assert "stall-region" in msg and f"127.0.0.1:{stalling.port}" in msg and "did not answer" in msg, msg
    assert "\n" not in msg


def test_default_deadline_is_documented() -> None:
    """docs/sync.md states the default bound; this keeps the two equal."""
    from pathlib import Path

    d = request_deadline_s()
    per_attempt = s3mod.CONNECT_TIMEOUT_S + s3mod.EXPECT_CONTINUE_S + s3mod.READ_TIMEOUT_S
    assert d == s3mod.MAX_ATTEMPTS * per_attempt + (s3mod.MAX_ATTEMPTS - 1) * 20 == 148
    page = (Path(__file__).resolve().parents[2] / "docs" / "sync.md").read_text()
    assert f"{d:.0f} s" in page and "deadline" in page
