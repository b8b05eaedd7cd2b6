"""tritonops sync against the real local S3 server (moto) and the real Triton of the region."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tests.store.conftest import Env, model_py, remove_model, remove_version, sha, write_model
from tritonops.cli import app
from tritonops.errors import PlanError, RepositoryError, ResidencyError, StoreError
from tritonops.release.pointer import publish_release
from tritonops.repo.manifest import ModelManifest, RepoIndex
from tritonops.repo.model_config import parse_config_text
from tritonops.store.sync import SyncOptions, sync

EU = "eu-west-1"
US = "us-east-1"


def run_sync(env: Env, *args: str) -> list[dict]:
    res = CliRunner().invoke(app, ["--config", str(env.config_path), "sync", *args, "-o", "json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def sync_error(env: Env, *args: str) -> str:
    res = CliRunner().invoke(app, ["--config", str(env.config_path), "sync", *args])
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def loadable_versions_are_complete(env: Env, region: str = EU) -> dict[str, list[int]]:
    """The invariant: every version a config lets Triton load has all its files with the right bytes.

    The expected bytes come from the LOCAL manifests (the truth), not from anything in the bucket.
    Returns model -> loadable versions.
    """
    objs = env.keys(region)
    out = {}
    for key, data in objs.items():
        if not key.endswith("/config.pbtxt"):
            continue
        model = key.split("/")[0]
        cfg = parse_config_text(data.decode(), key)
        assert cfg.version_policy.WhichOneof("policy_choice") == "specific", key
        local = ModelManifest.load(env.repo / model / "tritonops-manifest.json")
        for n in cfg.version_policy.specific.versions:
            for f in local.versions[n].files:
                got = objs.get(f"{model}/{n}/{f.path}")
                assert got is not None and sha(got) == f.sha256, (
                    f"{model}/{n}/{f.path} incomplete but loadable"
                )
        out[model] = sorted(cfg.version_policy.specific.versions)
    return out


def test_first_sync_then_noop_then_new_version(env: Env, unique) -> None:
    a, b = unique("a"), unique("b")
    write_model(env.repo, a, {1: {"model.py": model_py(2.0), "data/w.bin": os.urandom(3000)}})
    write_model(env.repo, b, {1: {"model.py": model_py(3.0)}})

    [s] = run_sync(env, "--region", EU)
    assert s["format_version"] == 1 and s["region"] == EU
    # 3 version files + 2 configs + 2 manifests + the index
    assert (s["uploaded_files"], s["skipped_files"], s["deleted_files"]) == (8, 0, 0)
    objs = env.keys(EU)
    assert objs[f"{a}/1/data/w.bin"] == (env.repo / a / "1/data/w.bin").read_bytes()
    idx = RepoIndex.loads(objs["tritonops-index.json"])
    assert idx.models[a]["digest"] == ModelManifest.load(env.repo / a / "tritonops-manifest.json").digest
    assert loadable_versions_are_complete(env) == {a: [1], b: [1]}
    # sha256 metadata on every object tritonops wrote
    rc = env.config.region(EU)
    head = env.client().head_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/{a}/1/model.py")
    assert head["Metadata"]["sha256"] == sha(model_py(2.0))

    [s] = run_sync(env, "--region", EU)
    assert (s["uploaded_files"], s["uploaded_bytes"], s["skipped_files"]) == (0, 0, 3)
    assert s["notes"] == []

    write_model(
        env.repo,
        a,
        {2: {"model.py": model_py(5.0), "data/w.bin": (env.repo / a / "1/data/w.bin").read_bytes()}},
    )
    [dry] = run_sync(env, "--region", EU, "--dry-run")
    assert dry["dry_run"] is True and dry["uploaded_files"] == 2 + 3  # 2 files, config, manifest, index
    assert env.keys(EU) == objs  # a dry run writes nothing
    [s] = run_sync(env, "--region", EU)
    assert {k: s[k] for k in ("uploaded_files", "uploaded_bytes", "skipped_files")} == {
        k: dry[k] for k in ("uploaded_files", "uploaded_bytes", "skipped_files")
    }
    assert loadable_versions_are_complete(env) == {a: [1, 2], b: [1]}  # latest 2 of the local policy
    assert run_sync(env, "--region", EU, "--verify")[0]["verified_files"] > 0


def test_changed_version_is_refused_unless_forced(env: Env, unique) -> None:
    m = unique("chg")
    write_model(env.repo, m, {1: {"model.py": model_py(2.0), "big.bin": os.urandom(2000)}})
    run_sync(env, "--region", EU)
    before = env.keys(EU)
    write_model(
        env.repo, m, {1: {"model.py": model_py(9.0), "big.bin": (env.repo / m / "1/big.bin").read_bytes()}}
    )
    line = sync_error(env, "--region", EU)
    assert f"model {m!r} version 1" in line and "immutable" in line
    assert env.keys(EU) == before
    [s] = run_sync(env, "--region", EU, "--force")
    # only the changed file goes up (plus pointers written twice: withdraw, then publish)
    assert s["skipped_files"] == 1
    assert env.keys(EU)[f"{m}/1/model.py"] == model_py(9.0)
    assert loadable_versions_are_complete(env) == {m: [1]}
    assert run_sync(env, "--region", EU)[0]["uploaded_files"] == 0


def test_prune_only_what_tritonops_published_with_guard(env: Env, unique) -> None:
    ms = [unique("p") for _ in range(4)]
    for m in ms:
        write_model(env.repo, m, {1: {"model.py": model_py(2.0)}, 2: {"model.py": model_py(3.0)}})
    env.put("foreign/1/model.py", b"not ours")
    env.put(f"{ms[0]}/notes.txt", b"not ours either")
    run_sync(env, "--region", EU)

    # A removed version without --prune stays published (and loadable).
    remove_version(env.repo, ms[0], 1)
    [s] = run_sync(env, "--region", EU)
    assert s["deleted_files"] == 0 and f"{ms[0]}/1/model.py" in env.keys(EU)

    # With --prune: one of 16 published objects is within the default guard (25%).
    [s] = run_sync(env, "--region", EU, "--prune")
    assert s["deleted_files"] == 1 and s["versions_pruned"] == {ms[0]: [1]}
    objs = env.keys(EU)
    assert f"{ms[0]}/1/model.py" not in objs and f"{ms[0]}/2/model.py" in objs
    assert objs["foreign/1/model.py"] == b"not ours" and objs[f"{ms[0]}/notes.txt"] == b"not ours either"
    assert loadable_versions_are_complete(env)[ms[0]] == [2]

    # Removing three of four models would delete most of the region: refused, nothing touched.
    for m in ms[1:]:
        remove_model(env.repo, m)
    before = env.keys(EU)
    line = sync_error(env, "--region", EU, "--prune")
    assert "--max-delete" in line and "--force" in line and EU in line
    assert env.keys(EU) == before
    [dry] = run_sync(env, "--region", EU, "--prune", "--force", "--dry-run")
    assert dry["deleted_files"] == 12 and sorted(dry["models_pruned"]) == sorted(ms[1:])
    assert env.keys(EU) == before
    [s] = run_sync(env, "--region", EU, "--prune", "--force")
    assert s["deleted_files"] == 12  # 3 models x (config, 2 version files, manifest)
    objs = env.keys(EU)
    assert not any(k.startswith(tuple(m + "/" for m in ms[1:])) for k in objs)
    assert objs["foreign/1/model.py"] == b"not ours"
    assert sorted(RepoIndex.loads(objs["tritonops-index.json"]).models) == [ms[0]]
    assert run_sync(env, "--region", EU, "--prune", "--verify")[0]["uploaded_files"] == 0


def test_residency(env: Env, unique) -> None:
    eu_only, anywhere = unique("eu-only"), unique("any")
    write_model(env.repo, eu_only, {1: {"model.py": model_py(2.0)}})
    write_model(env.repo, anywhere, {1: {"model.py": model_py(2.0)}})
    env = env.with_rules({eu_only: [EU]})

    line = sync_error(env, "--region", US, "--model", eu_only)
    assert (
        line == f"error: model {eu_only!r} is not allowed in region {US!r} (models.{eu_only}.regions: {EU})"
    )
    assert env.keys(US) == {}
    with pytest.raises(ResidencyError):
        sync(env.config, [US], SyncOptions(models=[eu_only]), releases=publish_release)

    out = {s["region"]: s for s in run_sync(env, "--all-regions")}
    assert out[US]["residency_skipped"] == [eu_only]
    assert not any(k.startswith(eu_only) for k in env.keys(US))
    assert f"{eu_only}/1/model.py" in env.keys(EU) and f"{anywhere}/1/model.py" in env.keys(US)


def test_verify_detects_a_tampered_object(env: Env, unique) -> None:
    m = unique("tamper")
    write_model(env.repo, m, {1: {"model.py": model_py(2.0)}})
    run_sync(env, "--region", EU, "--verify")
    env.put(f"{m}/1/model.py", model_py(7.0))  # same key, other bytes, no tritonops metadata
    line = sync_error(env, "--region", EU, "--verify")
    assert line.startswith("error: verify failed:") and f"{m}/1/model.py" in line


def test_bad_inputs_are_one_line_errors(env: Env, unique, tmp_path: Path) -> None:
    m = unique("bad")
    write_model(env.repo, m, {1: {"model.py": model_py(2.0)}})
    assert "unknown region 'nowhere'" in sync_error(env, "--region", "nowhere")

    # A manifest that steers keys outside the prefix.
    run_sync(env, "--region", EU)
    good = env.keys(EU)[f"{m}/tritonops-manifest.json"]
    evil = json.loads(good)
    evil["versions"]["1"]["files"]["../../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
    env.put(f"{m}/tritonops-manifest.json", json.dumps(evil).encode())
    write_model(env.repo, m, {2: {"model.py": model_py(3.0)}})
    line = sync_error(env, "--region", EU)
    assert "outside the repository prefix" in line and m in line
    env.put(f"{m}/tritonops-manifest.json", good)

    # An invalid local repository: bytes changed under a version the manifest recorded.
    (env.repo / m / "1" / "model.py").write_bytes(b"# changed\n")
    line = sync_error(env, "--region", EU)
    assert line.startswith("error: refusing to publish an invalid repository:") and "model.py" in line
    with pytest.raises(RepositoryError):
        sync(env.config, [EU], SyncOptions(dry_run=True), releases=publish_release)

    # A bucket that does not exist.
    rc = env.config.region(EU)
    cfg = env.config.model_copy(
        update={"regions": {EU: rc.model_copy(update={"bucket": "s3://no-such-bucket-x/p"})}}
    )
    (env.repo / m / "1" / "model.py").write_bytes(model_py(2.0))
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-x' does not exist"):
        sync(cfg, [EU], SyncOptions(), releases=publish_release)


def test_plan_errors_leave_the_bucket_alone(env: Env, unique) -> None:
    with pytest.raises(PlanError):
        sync(env.config, [], SyncOptions(), releases=publish_release)


def kill_after(env: Env, k: int) -> list[str]:
    """A sync of EU in a subprocess that SIGKILLs itself after ``k`` object writes (tests/store/kill_after.py)."""
    return [sys.executable, "-m", "tests.store.kill_after", str(env.config_path), EU, str(k)]


@pytest.mark.slow
def test_sigkill_at_any_point_leaves_nothing_incomplete_loadable(env: Env, unique) -> None:
    a, b, c = unique("ka"), unique("kb"), unique("kc")
    write_model(env.repo, a, {1: {"model.py": model_py(2.0), "w.bin": os.urandom(5000)}})
    write_model(env.repo, b, {1: {"model.py": model_py(2.0)}})
    run_sync(env, "--region", EU)
    # Then: a new version of a (2 files), a new version of b (1 file), a new model c (2 files).
    write_model(env.repo, a, {2: {"model.py": model_py(4.0), "w.bin": os.urandom(5000)}})
    write_model(env.repo, b, {2: {"model.py": model_py(5.0)}})
    write_model(env.repo, c, {1: {"model.py": model_py(6.0), "w.bin": os.urandom(7000)}})
    [plan] = run_sync(env, "--region", EU, "--dry-run")
    total = plan["uploaded_files"]  # 5 files, 3 configs, 3 manifests, 1 index
    assert total == 12
    cmd = [
        sys.executable,
        "-m",
        "tritonops",
        "--config",
        str(env.config_path),
        "sync",
        "--region",
        EU,
        "-o",
        "json",
    ]
    base_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed_at = []
    for k in (1, 3, 5, 6, 7, 9, 11):
        proc = subprocess.run(kill_after(env, k), env=base_env, capture_output=True, timeout=120)
        if proc.returncode == -9:
            killed_at.append(k)
        loadable = loadable_versions_are_complete(env)
        assert loadable[a] in ([1], [1, 2]) and loadable[b] in ([1], [1, 2])
    assert killed_at[:2] == [1, 3]  # the early kills really happened mid-sync
    proc = subprocess.run(cmd, env=base_env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert loadable_versions_are_complete(env) == {a: [1, 2], b: [1, 2], c: [1]}
    [s] = run_sync(env, "--region", EU, "--verify")
    assert s["uploaded_files"] == 0 and s["verified_files"] > 0


@pytest.mark.slow
def test_sigkill_fresh_each_time_then_rerun_converges(env: Env, unique) -> None:
    """Each kill point from the same starting state (a new prefix per point), then a plain rerun."""
    import uuid

    from tests.store.conftest import _write_config

    a, b = unique("fa"), unique("fb")
    write_model(env.repo, a, {1: {"model.py": model_py(2.0)}, 2: {"model.py": model_py(3.0)}})
    write_model(env.repo, b, {1: {"model.py": model_py(2.0), "w.bin": os.urandom(100)}})
    base_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for k in (2, 4, 5, 6):
        rc = env.config.region(EU)
        fresh = env.config.model_copy(
            update={
                "regions": {
                    EU: rc.model_copy(update={"bucket": f"s3://{rc.bucket_name}/k{k}-{uuid.uuid4().hex[:8]}"})
                }
            }
        )
        e = Env(fresh, _write_config(fresh, env.config_path.with_name(f"k{k}.yaml")), env.repo, env.stack)
        proc = subprocess.run(kill_after(e, k), env=base_env, capture_output=True, timeout=120)
        assert proc.returncode == -9
        assert all(v == [1, 2] or v == [1] for v in loadable_versions_are_complete(e).values())
        [s] = run_sync(e, "--region", EU)
        assert s["uploaded_files"] > 0
        assert loadable_versions_are_complete(e) == {a: [1, 2], b: [1]}
        assert run_sync(e, "--region", EU, "--verify")[0]["uploaded_files"] == 0


def test_real_triton_loads_a_synced_model(env: Env, unique) -> None:
    """Sync into the prefix the region's Triton reads, then load through model control and infer."""
    from tests.store.conftest import _write_config

    m = unique("served")
    write_model(env.repo, m, {1: {"model.py": model_py(2.0)}, 2: {"model.py": model_py(10.0)}}, keep=1)
    cfg = env.config.model_copy(update={"regions": env.stack.config.regions})
    e = Env(cfg, _write_config(cfg, env.config_path.with_name("served.yaml")), env.repo, env.stack)
    [s] = run_sync(e, "--region", EU, "--model", m)
    assert s["uploaded_files"] == 2 + 3
    server = e.config.region(EU).servers[0]
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=60)
    client.load_model(m)
    try:
        assert client.is_model_ready(m, "2") and not client.is_model_ready(m, "1")
        x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer(m, [inp]).as_numpy("Y")
        assert y.tolist() == [[11.0, 21.0, 31.0, 41.0]]  # version 2: Y = 10X + 1
    finally:
        client.unload_model(m)


def test_a_region_that_fails_does_not_keep_the_others_from_their_sync(env: Env, unique, tmp_path: Path) -> None:
    """--all-regions under cron: eu-west-1's endpoint is down; us-east-1 (after it) is still synced,
    and the exit code and the one line say which region failed and why."""
    from tritonops.config import dump_config
    from tritonops.dev.stack import free_port

    m = unique("both")
    write_model(env.repo, m, {1: {"model.py": model_py(2.0)}})
    regions = dict(env.config.regions)
    regions[EU] = regions[EU].model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    path = tmp_path / "eu-down.yaml"
    path.write_text(dump_config(env.config.model_copy(update={"regions": regions})))
    res = CliRunner().invoke(app, ["--config", str(path), "sync", "--all-regions", "-o", "json"])
    assert res.exit_code == 1, res.output
    failure, summary = [json.loads(line) for line in res.stdout.splitlines()]  # one line per region, in order
    assert failure["region"] == EU and failure["error"].startswith(f"region {EU}: cannot reach S3 endpoint"), failure
    assert summary["region"] == US and summary["models_published"] == [m]
    assert f"{m}/1/model.py" in env.keys(US)
    [line] = res.stderr.strip().splitlines()
    assert line == f"error: 1 of 2 regions failed ({US} synced): {failure['error']}", line

    # Named alone, the failing region is the same one line as before; both up, exit 0.
    res = CliRunner().invoke(app, ["--config", str(path), "sync", "--region", EU])
    assert res.exit_code == 1 and res.stderr.startswith(f"error: region {EU}: cannot reach S3 endpoint"), res.output
    assert [s["region"] for s in run_sync(env, "--all-regions")] == [EU, US]
