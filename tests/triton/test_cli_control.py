"""`tritonops load|unload|mem|status` end to end against the real local stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.memory.models import ALLOC_MODEL_PY, publish_alloc_model
from tritonops.cli import app
from tritonops.dev.stack import free_port
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest, VersionEntry, scan_files
from tritonops.store.s3 import s3_client

REGION = "eu-west-1"
MIB = 1 << 20


def _publish_with_manifest(region, model: str, mib: int, tmp_path: Path) -> ModelManifest:
    """The model, and its manifest beside its config, as `tritonops sync` lays them out."""
    folder = tmp_path / model / "1"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(ALLOC_MODEL_PY)
    manifest = ModelManifest(model, {1: VersionEntry(1, scan_files(folder))})
    publish_alloc_model(region, model, mib)
    s3_client(region).put_object(
        Bucket=region.bucket_name, Key=f"{region.prefix}/{model}/{MANIFEST_NAME}", Body=manifest.dumps()
    )
    return manifest


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _config_for(dev_stack, triton, tmp_path: Path) -> tuple[str, object]:
    """A tritonops.yaml whose region REGION has one server: ``triton``, ours alone.

    Memory is measured on the server's whole process tree: on the session's shared server another
    test's model finishing its unload inside our measurement window would be counted against us.
    """
    from tritonops.config import ServerConfig, dump_config

    server = ServerConfig(
        name="fresh-0", http_url=triton.http_url, grpc_url=triton.grpc_url, metrics_url=triton.metrics_url
    )
    region = dev_stack.config.region(REGION).model_copy(update={"servers": [server]})
    cfg = dev_stack.config.model_copy(update={"regions": {REGION: region}, "state_dir": tmp_path / "state"})
    path = tmp_path / "tritonops.yaml"
    path.write_text(dump_config(cfg))
    return str(path), cfg


def test_load_mem_status_unload_json(dev_stack, fresh_triton, unique, tmp_path: Path) -> None:
    cfg, config = _config_for(dev_stack, fresh_triton(REGION), tmp_path)
    region = config.region(REGION)
    server = region.servers[0]
    model = unique("cli64")
    manifest = _publish_with_manifest(region, model, 64, tmp_path)

    code, out, err = _run("--config", cfg, "load", model, "--server", server.name, "-o", "json")
    assert code == 0, err
    first = json.loads(out)
    assert first["format_version"] == 1
    assert (first["model"], first["version"], first["probe"], first["predicted_source"]) == (
        model,
        1,
        "host",
        "estimate",
    )
    assert 64 * MIB < first["footprint_bytes"] < 64 * MIB + 200 * MIB

    status_code, out, err = _run("--config", cfg, "status", "--region", REGION, "-o", "json")
    assert status_code == 0, err
    st = json.loads(out)
    (srv,) = st["servers"]
    assert srv["server"] == server.name and srv["live"] and srv["ready"]
    # The footprint the ledger holds for the version, measured by the load above.
    held = {"footprint_bytes": first["footprint_bytes"], "footprint_source": "measured"}
    assert srv["models"][model] == {"versions": {"1": {"state": "READY", "reason": "", **held}}}
    assert srv["memory"]["probe"] == "host" and srv["memory"]["devices"][0]["total_bytes"] > 0

    code, out, err = _run("--config", cfg, "mem", "--server", server.http_url, "-o", "json")
    assert code == 0, err
    mem = json.loads(out)
    (s,) = mem["servers"]
    assert {"total_bytes", "used_bytes", "free_bytes"} <= set(s["devices"][0])
    (row,) = [m for m in s["models"] if m["model"] == model]
    assert row["version"] == 1 and row["footprint_bytes"] == first["footprint_bytes"]
    assert row["footprint_source"] == "measured" and row["measure_error"] == ""
    assert row["predicted_bytes"] == first["footprint_bytes"] and row["predicted_source"] == "measured"
    assert s["leaked_bytes"] == 0

    # The ledger key carries the manifest's digest for that version.
    ledger = json.loads((tmp_path / "state" / "footprints.json").read_text())
    keys = [k for k in ledger["footprints"] if k.startswith(f"{model}|1|")]
    assert keys == [f"{model}|1|{manifest.versions[1].digest}|cpu|2.51.0"]

    code, out, err = _run("--config", cfg, "unload", model, "--server", server.name, "-o", "json")
    assert code == 0, err
    un = json.loads(out)
    assert un["waited"] and un["released_bytes"] > 0.9 * first["footprint_bytes"]
    code, out, _ = _run("--config", cfg, "status", "--region", REGION, "-o", "json")
    assert json.loads(out)["servers"][0]["models"][model]["versions"]["1"]["state"] == "UNAVAILABLE"

    # Loaded again: predicted from the measurement, within 5%.
    code, out, err = _run("--config", cfg, "load", model, "--server", server.name, "-o", "json")
    again = json.loads(out)
    assert again["predicted_source"] == "measured"
    assert abs(again["predicted_bytes"] - again["footprint_bytes"]) <= 0.05 * again["footprint_bytes"]
    code, _, err = _run("--config", cfg, "unload", model, "--server", server.name)
    assert code == 0 and err == ""


def test_tables_for_people(dev_stack, unique) -> None:
    cfg = str(dev_stack.config_path)
    server = dev_stack.config.region(REGION).servers[0]
    model = unique("tbl")
    publish_alloc_model(dev_stack.config.region(REGION), model, 0)
    code, out, err = _run("--config", cfg, "load", model, "--server", server.name)
    assert code == 0, err
    assert out.startswith(f"loaded {model} v1 on {server.name}") and "footprint" in out
    code, out, _ = _run("--config", cfg, "status", "--region", REGION)
    assert code == 0 and model in out and "READY" in out
    code, out, _ = _run("--config", cfg, "mem", "--server", server.name)
    assert code == 0 and model in out and "host" in out
    code, out, _ = _run("--config", cfg, "unload", model, "--server", server.name)
    assert code == 0 and out.startswith(f"unloaded {model} from {server.name}")


def test_errors_are_one_line_with_exit_1(dev_stack, unique) -> None:
    cfg = str(dev_stack.config_path)
    server = dev_stack.config.region(REGION).servers[0]
    model = unique("nope")
    code, out, err = _run("--config", cfg, "load", model, "--server", server.name)
    assert code == 1 and out == ""
    assert err.startswith(f"error: server {server.http_url}: model {model!r} is not in the server's repository")
    assert err.count("\n") == 1

    broken = unique("broken")
    publish_alloc_model(dev_stack.config.region(REGION), broken, 0, broken=True)
    code, _, err = _run("--config", cfg, "load", broken, "--server", server.name)
    assert code == 1 and "RuntimeError: tritonops test: this model cannot load" in err and err.count("\n") == 1

    down = f"http://127.0.0.1:{free_port()}"
    code, out, err = _run("mem", "--server", down, "--timeout", "2")
    assert code == 1 and out == ""
    assert err.startswith(f"error: server {down}: metadata failed: server unreachable")

    code, _, err = _run("--config", cfg, "status", "--region", "mars-1")
    assert code == 1 and "unknown region 'mars-1'" in err

    code, _, err = _run("--config", cfg, "mem", "--server", "no-such-server")
    assert code == 1 and "not a configured server name" in err and server.name in err


def test_without_a_config_a_url_is_enough(dev_stack, unique, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRITONOPS_CONFIG", raising=False)
    server = dev_stack.config.region(REGION).servers[0]
    proc = subprocess.run(
        [sys.executable, "-m", "tritonops", "mem", "--server", f"grpc://{server.grpc_url}", "-o", "json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format_version"] == 1 and doc["servers"][0]["triton_version"] == "2.51.0"
    assert doc["servers"][0]["devices"][0]["kind"] == "host"


def test_status_reports_a_down_server_and_exits_1(dev_stack, tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(dev_stack.config_path.read_text())
    dead = f"http://127.0.0.1:{free_port()}"
    data["regions"][REGION]["servers"].append({"name": "eu-dead", "http_url": dead})
    cfg = tmp_path / "tritonops.yaml"
    cfg.write_text(yaml.safe_dump(data))
    code, out, _ = _run("--config", str(cfg), "status", "--region", REGION, "-o", "json", "--timeout", "2")
    assert code == 1
    servers = {s["server"]: s for s in json.loads(out)["servers"]}
    assert servers[f"{REGION}-triton-0"]["ready"] is True and "error" not in servers[f"{REGION}-triton-0"]
    down = servers["eu-dead"]
    assert (down["live"], down["ready"]) == (False, False)
    assert down["error"].startswith(f"server {dead}: live check failed: server unreachable")
