"""The local stack is real: a real S3 server, real tritonservers, started and stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tests.conftest import REGIONS, Stack
from tritonops.cli import app
from tritonops.dev import stack
from tritonops.dev.smoke import check_server, publish_smoke_model
from tritonops.store.s3 import s3_client


def test_model_in_a_regions_bucket_loads_and_answers(dev_stack: Stack, unique) -> None:
    """The first end-to-end path: bucket -> explicit load through model control -> inference."""
    for region in REGIONS:
        model = unique("smoke")
        results = check_server(region, dev_stack.config.region(region), model=model)
        assert len(results) == 1
        r = results[0]
        assert r.ok
        assert r.output == [3.0, 5.0, 7.0, 9.0]


def test_each_triton_reads_only_its_own_regions_bucket(dev_stack: Stack, unique) -> None:
    model = unique("only-eu")
    publish_smoke_model(dev_stack.config.region("eu-west-1"), model)
    us = dev_stack.config.region("us-east-1").servers[0]
    client = httpclient.InferenceServerClient(us.http_url.removeprefix("http://"))
    try:
        with pytest.raises(Exception, match="failed to load|not found|no available"):
            client.load_model(model)
        eu = dev_stack.config.region("eu-west-1").servers[0]
        eu_client = httpclient.InferenceServerClient(eu.http_url.removeprefix("http://"))
        eu_client.load_model(model)
        x = np.ones((2, 4), dtype=np.float32)
        inp = httpclient.InferInput("X", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        assert np.allclose(eu_client.infer(model, [inp]).as_numpy("Y"), 3.0)
        eu_client.unload_model(model)
    finally:
        client.close()


def test_generated_config_points_at_the_stack(dev_stack: Stack) -> None:
    cfg = dev_stack.config
    assert sorted(cfg.regions) == sorted(REGIONS)
    for name, region in cfg.regions.items():
        assert region.endpoint_url == dev_stack.state.s3_endpoint
        assert region.endpoint_url.startswith("http://127.0.0.1:")
        assert region.servers and region.servers[0].http_url.startswith("http://127.0.0.1:")
        # The bucket exists and is reachable with the credentials the config points at.
        client = s3_client(region)
        client.head_bucket(Bucket=region.bucket_name)
        assert name in region.bucket_name
    # Credentials live in a 0600 file, never in the config.
    text = dev_stack.config_path.read_text()
    assert dev_stack.credentials.secret_key not in text
    mode = (dev_stack.state_dir / "credentials").stat().st_mode & 0o777
    assert mode == 0o600


def _stack_pids(state_dir: Path) -> list[int]:
    st = stack.read_state(state_dir)
    assert st is not None
    return [r.pid for r in st.processes.values()]


def test_up_is_idempotent_down_stops_everything_and_a_killed_stack_recovers(tmp_path: Path) -> None:
    runner = CliRunner()
    state_dir = tmp_path / "st"
    args = ["dev", "up", "--state-dir", str(state_dir), "--region", "eu-west-1", "-o", "json"]
    r1 = runner.invoke(app, args)
    assert r1.exit_code == 0, r1.output
    doc = json.loads(r1.stdout)
    assert doc["format_version"] == 1
    assert Path(doc["config"]).exists()
    assert set(doc["regions"]) == {"eu-west-1"}
    pids = _stack_pids(state_dir)
    children = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]

    # up again: same processes, nothing new started
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0, r2.output
    assert _stack_pids(state_dir) == pids

    st = runner.invoke(app, ["dev", "status", "--state-dir", str(state_dir), "-o", "json"])
    assert st.exit_code == 0, st.output
    assert all(p["ready"] for p in json.loads(st.stdout)["parts"])

    # kill the Triton hard: status reports it, and up recovers
    st_obj = stack.read_state(state_dir)
    assert st_obj is not None
    triton = st_obj.processes["triton-eu-west-1"]
    os.kill(triton.pid, signal.SIGKILL)
    psutil.Process(triton.pid).wait(10) if psutil.pid_exists(triton.pid) else None
    st = runner.invoke(app, ["dev", "status", "--state-dir", str(state_dir)])
    assert st.exit_code == 1
    r3 = runner.invoke(app, args)
    assert r3.exit_code == 0, r3.output
    new_pids = _stack_pids(state_dir)
    assert triton.pid not in new_pids
    assert all(psutil.pid_exists(p) for p in new_pids)
    # the survivor of the killed stack (the S3 server) was stopped, not leaked
    assert not any(psutil.pid_exists(p) and p not in new_pids for p in pids if p != triton.pid)

    down = runner.invoke(app, ["dev", "down", "--state-dir", str(state_dir), "-o", "json"])
    assert down.exit_code == 0, down.output
    assert sorted(json.loads(down.stdout)["stopped"]) == ["envoy-eu-west-1", "s3", "triton-eu-west-1"]
    for p in new_pids + children:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert stack.read_state(state_dir) is None
    st = runner.invoke(app, ["dev", "status", "--state-dir", str(state_dir)])
    assert st.exit_code == 1


def test_down_never_kills_a_process_it_did_not_start(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another process (pid reuse) must not be killed."""
    import subprocess

    bystander = subprocess.Popen(["sleep", "30"])
    try:
        state_dir = tmp_path / "st"
        state_dir.mkdir()
        rec = stack.ProcessRecord("s3", bystander.pid, create_time=1.0, log="x", argv=["x"])
        fake = stack.StackState(str(state_dir), str(state_dir / "c.yaml"), "moto", "http://127.0.0.1:1", {"s3": rec})
        (state_dir / "state.json").write_text(json.dumps(fake.to_json()))
        assert stack.down(state_dir) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_rclone_s3_server_serves_boto3(tmp_path: Path) -> None:
    """The rclone S3 server (used by the benchmarks) is real and stores what it is given."""
    creds = stack.Credentials.generate()
    srv = stack.start_s3(tmp_path / "data", tmp_path / "s3.log", creds, kind="rclone")
    try:
        from tritonops.config import RegionConfig

        cred_file = tmp_path / "creds"
        creds.write_shared_file(cred_file)
        region = RegionConfig(
            bucket="s3://bucket1/p", endpoint_url=srv.endpoint_url, profile=stack.DEV_PROFILE, credentials_file=cred_file
        )
        stack.ensure_bucket(region)
        c = s3_client(region)
        c.put_object(Bucket="bucket1", Key="p/x/1/model.py", Body=b"hello")
        assert c.get_object(Bucket="bucket1", Key="p/x/1/model.py")["Body"].read() == b"hello"
        assert (tmp_path / "data" / "bucket1" / "p" / "x" / "1" / "model.py").read_bytes() == b"hello"
        c.delete_objects(Bucket="bucket1", Delete={"Objects": [{"Key": "p/x/1/model.py"}]})
        assert not (tmp_path / "data" / "bucket1" / "p" / "x" / "1" / "model.py").exists()
        # Idle after writes, it takes no CPU: started with `--dir-cache-time 0s`, rclone 1.75 spins
        # both cores from the first write on (1.1 to 2.0 s of CPU a second here), stalling every
        # request for tens of seconds, and every other test on the machine with them.
        proc = psutil.Process(srv.record.pid)
        before = sum(proc.cpu_times()[:2])
        time.sleep(1.0)
        assert sum(proc.cpu_times()[:2]) - before < 0.2
    finally:
        stack.stop(srv.record)
    assert not srv.record.alive()


def test_up_with_a_policy_writes_its_rules_and_a_bad_policy_starts_nothing(tmp_path: Path) -> None:
    from tritonops.config import load_config

    runner = CliRunner()
    state_dir = tmp_path / "st"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  iris: {regions: [ap-south-1]}\n")
    res = runner.invoke(app, ["dev", "up", "--state-dir", str(state_dir), "--region", "eu-west-1", "--policy", str(bad)])
    assert res.exit_code == 1
    assert "models.iris.regions[0]: unknown region 'ap-south-1'" in res.stderr
    assert stack.read_state(state_dir) is None  # nothing left running

    good = tmp_path / "policy.yaml"
    good.write_text("models:\n  iris: {regions: [eu-west-1], placement: pinned}\n")
    res = runner.invoke(app, ["dev", "up", "--state-dir", str(state_dir), "--region", "eu-west-1", "--policy", str(good)])
    try:
        assert res.exit_code == 0, res.output
        cfg = load_config(state_dir / "tritonops.yaml")
        assert cfg.allowed_regions("iris") == ["eu-west-1"]
        assert cfg.placement("iris").value == "pinned"
        # a later plain `up` keeps the policy
        res = runner.invoke(app, ["dev", "up", "--state-dir", str(state_dir), "--region", "eu-west-1"])
        assert res.exit_code == 0, res.output
        assert load_config(state_dir / "tritonops.yaml").placement("iris").value == "pinned"
    finally:
        stack.down(state_dir)


def test_stop_when_proc_entries_vanish_mid_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dev down` after the demo once failed with `internal error: FileNotFoundError`: psutil can raise it
    instead of NoSuchProcess when a /proc entry vanishes while it reads (psutil issue 2418; stubs exit
    as their server stops). The race cannot be timed, so psutil's listing is made to raise it."""
    record = stack.spawn("sleeper", ["sleep", "60"], tmp_path / "sleeper.log")

    def vanished(self: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
        raise FileNotFoundError(2, "No such file or directory", f"/proc/{self.pid}/stat")

    monkeypatch.setattr(psutil.Process, "children", vanished)
    assert stack.stop(record) is True
    assert record.process() is None
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
