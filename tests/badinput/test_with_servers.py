"""Bad input that needs the real stack (moto S3 + tritonserver on loopback, tests/conftest.py):
unknown models and probes on a live Triton, a missing AWS profile, a model its residency rule keeps
out of a region, and a local repository damaged after its index was written. Each is one line
naming the culprit; the bucket listing and the repository are unchanged.

Categories: servers (unload/load/mem), buckets (profile, residency, damaged local repository).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.badinput.harness import assert_refused, bucket_hash, invoke, tree_hash
from tests.conftest import Stack
from tests.repo.conftest import make_python_model, python_config
from tritonops.config import load_config
from tritonops.store.s3 import s3_client

REGION = "eu-west-1"


@pytest.fixture
def env(dev_stack: Stack, tmp_path: Path, unique: Callable[[str], str]) -> Iterator[dict[str, Any]]:
    """A config of its own on the stack's buckets (own prefix), with model `m` allowed only in eu-west-1."""
    data = yaml.safe_load(dev_stack.config_path.read_text())
    prefix = unique("badinput")
    for r in data["regions"].values():
        r["bucket"] = r["bucket"].rstrip("/") + "/" + prefix
    data["repository"] = str(tmp_path / "repo")
    data["state_dir"] = str(tmp_path / "state")
    data.setdefault("models", {})["m"] = {"regions": [REGION]}
    cfg = tmp_path / "tritonops.yaml"
    cfg.write_text(yaml.safe_dump(data))
    res = invoke(["-c", str(cfg), "repo", "add", "m", "--from", str(make_python_model(tmp_path / "src")),
                  "--config", str(python_config(tmp_path / "c.pbtxt"))])  # fmt: skip
    assert res.exit_code == 0, res.output
    region = load_config(cfg).region(REGION)
    yield {"cfg": cfg, "data": data, "repo": tmp_path / "repo", "client": s3_client(region),
           "bucket": region.bucket_name, "server": region.servers[0].name}  # fmt: skip


def _refused(env: dict[str, Any], argv: list[str], names: list[str], cfg: Path | None = None) -> None:
    before = (tree_hash(env["repo"]), bucket_hash(env["client"], env["bucket"]))
    res = invoke(["-c", str(cfg or env["cfg"]), *argv])
    assert_refused(res, names, code=1)
    assert (tree_hash(env["repo"]), bucket_hash(env["client"], env["bucket"])) == before


def test_unload_of_a_model_the_server_does_not_know(env: dict[str, Any]) -> None:
    _refused(env, ["unload", "ghost-model", "--server", env["server"]], ["'ghost-model'", env["server"]])


def test_load_of_a_model_the_server_does_not_know(env: dict[str, Any]) -> None:
    _refused(env, ["load", "ghost-model", "--server", env["server"]], ["ghost-model"])


@pytest.mark.parametrize("cmd", [["mem"], ["load", "m"], ["unload", "m"]], ids=["mem", "load", "unload"])
def test_bogus_probe_on_a_live_server(env: dict[str, Any], cmd: list[str]) -> None:
    _refused(env, [*cmd, "--server", env["server"], "--probe", "bogus"], ["--probe", "'bogus'"])


def test_sync_with_a_missing_profile_names_bucket_and_profile(env: dict[str, Any], tmp_path: Path) -> None:
    data = env["data"]
    data["regions"][REGION]["profile"] = "nobody-here"
    cfg = tmp_path / "noprofile.yaml"
    cfg.write_text(yaml.safe_dump(data))
    _refused(env, ["sync", "--region", REGION], ["'nobody-here'", env["bucket"],
                                                 str(data["regions"][REGION]["credentials_file"])], cfg)


def test_sync_of_a_model_its_rule_keeps_out(env: dict[str, Any]) -> None:
    other = next(r for r in env["data"]["regions"] if r != REGION)
    _refused(env, ["sync", "--region", other, "--model", "m"], ["'m'", other])




@pytest.mark.parametrize(
    "damage",
    [
        lambda r: (r / "m" / "1" / "model.py").write_text("changed"),
        lambda r: os.mkfifo(r / "m" / "1" / "pipe"),
        lambda r: os.symlink("/etc/passwd", r / "m" / "1" / "pw"),
    ],
    ids=["byte-changed", "fifo", "symlink"],
)
def test_sync_refuses_a_repository_damaged_after_its_index(env: dict[str, Any], damage: Callable[[Path], Any]) -> None:
    res = invoke(["-c", str(env["cfg"]), "sync", "--region", REGION])
    assert res.exit_code == 0, res.output
    damage(env["repo"])
    _refused(env, ["sync", "--region", REGION], ["m/1"])


def _dead_endpoint(r: dict[str, Any], tmp_path: Path) -> list[str]:
    from tritonops.dev.stack import free_port

    r["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    return ["cannot reach S3 endpoint", r["endpoint_url"]]


def _missing_bucket(r: dict[str, Any], tmp_path: Path) -> list[str]:
    r["bucket"] = "s3://no-such-bucket-badinput/p"
    return ["bucket 'no-such-bucket-badinput' does not exist", r["endpoint_url"]]


def _wrong_secret(r: dict[str, Any], tmp_path: Path) -> list[str]:
    from tritonops.dev.stack import Credentials

    creds = tmp_path / "wrong-creds"
    Credentials("WRONGKEY", "wrong-secret-value").write_shared_file(creds)
    r["credentials_file"] = str(creds)
    return ["access denied", r["bucket"].removeprefix("s3://").split("/")[0]]


def _missing_folder(r: dict[str, Any], tmp_path: Path) -> list[str]:
    for k in ("endpoint_url", "profile", "credentials_file"):
        r.pop(k, None)
    r["bucket"] = f"file://{tmp_path / 'nowhere' / 'bucket'}"
    return ["folder does not exist", str(tmp_path / "nowhere" / "bucket")]


# sync's first request (the remote index) is what finds an unusable bucket: no HEAD before it.
UNUSABLE = [("dead-endpoint", _dead_endpoint, "moto"), ("missing-bucket", _missing_bucket, "moto"),
            ("missing-bucket-rclone", _missing_bucket, "rclone"), ("wrong-secret-rclone", _wrong_secret, "rclone"),
            ("missing-folder", _missing_folder, "moto")]  # fmt: skip


@pytest.mark.parametrize(("case", "breaks", "server"), UNUSABLE, ids=[c[0] for c in UNUSABLE])
def test_sync_to_an_unusable_bucket(
    env: dict[str, Any], tmp_path: Path, dev_stack: Stack, case: str, breaks: Callable[..., list[str]], server: str
) -> None:
    from tritonops.dev import stack

    data = env["data"]
    r = data["regions"][REGION]
    srv = None
    if server == "rclone":  # checks signatures (moto accepts any key) and serves a folder per bucket
        (tmp_path / "rclone-data" / "rb").mkdir(parents=True)  # before the server starts: it caches listings
        srv = stack.start_s3(tmp_path / "rclone-data", tmp_path / "rclone.log", dev_stack.credentials, kind="rclone")
        r["endpoint_url"], r["bucket"] = srv.endpoint_url, "s3://rb/p"
    try:
        names = breaks(r, tmp_path)
        cfg = tmp_path / f"{case}.yaml"
        cfg.write_text(yaml.safe_dump(data))
        _refused(env, ["sync", "--region", REGION], [REGION, *names], cfg)
        if server == "rclone":
            assert not any((tmp_path / "rclone-data").rglob("*.*"))  # nothing written there either
        assert not (tmp_path / "nowhere").exists()
    finally:
        if srv is not None:
            stack.stop(srv.record)
