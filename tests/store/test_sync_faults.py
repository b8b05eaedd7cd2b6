"""S3 down mid-sync, on a private moto server this test starts (never the shared one).

The sync must fail (a one-line StoreError, exit 1 from the CLI) within the store's request deadline,
leave nothing incomplete loadable, and a later sync must converge (every object verified).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.store.conftest import _write_config, model_py, write_model
from tritonops.cli import app
from tritonops.config import Config, RegionConfig
from tritonops.dev import stack
from tritonops.errors import StoreError
from tritonops.release.pointer import publish_release
from tritonops.store.s3 import request_deadline_s, s3_client
from tritonops.store.sync import SyncOptions, sync

R = "private"


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[tuple[Config, Path, stack.S3Server, stack.Credentials]]:
    creds = stack.Credentials.generate()
    cred_file = tmp_path / "credentials"
    creds.write_shared_file(cred_file)
    srv = stack.start_s3(tmp_path / "s3", tmp_path / "s3.log", creds, kind="moto")
    rc = RegionConfig(bucket="s3://fault/models", endpoint_url=srv.endpoint_url, profile=stack.DEV_PROFILE,
                      credentials_file=cred_file)  # fmt: skip
    s3_client(rc).create_bucket(Bucket="fault")
    repo = tmp_path / "repo"
    repo.mkdir()
    cfg = Config(repository=repo, regions={R: rc}, state_dir=tmp_path / "state")
    path = _write_config(cfg, tmp_path / "tritonops.yaml")
    yield cfg, path, srv, creds
    stack.stop(srv.record)  # no-op once the test killed it


def test_s3_killed_mid_sync_fails_then_converges(private_s3, tmp_path: Path) -> None:
    cfg, path, srv, creds = private_s3
    for i in range(3):
        write_model(cfg.repository_path, f"m{i}", {1: {"model.py": model_py(float(i)), "w.bin": os.urandom(4000)}})
    writes: list[str] = []

    def kill_after_two(key: str) -> None:
        writes.append(key)
        if len(writes) == 2:
            os.kill(srv.record.pid, signal.SIGKILL)
            time.sleep(0.5)  # gone before the next write

    t0 = time.monotonic()
    with pytest.raises(StoreError) as e:
        sync(cfg, [R], SyncOptions(workers=1), on_step=kill_after_two, releases=publish_release)
    assert time.monotonic() - t0 < request_deadline_s()
    assert len(writes) == 2 and "\n" not in str(e.value) and srv.endpoint_url in str(e.value)
    assert all("/1/" in k for k in writes)  # only version files went up: no config points at them

    res = CliRunner().invoke(app, ["--config", str(path), "sync", "--region", R])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "cannot reach S3 endpoint" in res.stderr

    # The server comes back (moto keeps nothing: the bucket is recreated, as after a storage loss).
    port = int(srv.endpoint_url.rsplit(":", 1)[1])
    back = stack.start_s3(tmp_path / "s3", tmp_path / "s3-2.log", creds, kind="moto", port=port)
    try:
        s3_client(cfg.region(R)).create_bucket(Bucket="fault")
        (s,) = sync(cfg, [R], SyncOptions(verify=True), releases=publish_release)
        assert sorted(s.models_published) == ["m0", "m1", "m2"] and s.verified_files
        (again,) = sync(cfg, [R], SyncOptions(), releases=publish_release)
        assert again.uploaded_files == 0
    finally:
        stack.stop(back.record)
