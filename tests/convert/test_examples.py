"""The example recipes, end to end: converted, gated, written, validated, served by the real Triton."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests.conftest import Stack
from tests.convert.conftest import CONVERTERS, Converted, run_cli
from tritonops.convert.accuracy import gate
from tritonops.convert.recipe import TargetKind, TargetSpec
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest
from tritonops.repo.repository import validate_repository
from tritonops.store.s3 import s3_client

SUFFIXES = {
    "onnx": "",
    "onnx-fp16": "-fp16",
    "onnx-int8-dynamic": "-int8",
    "onnx-int8-static": "-int8-static",
}


def _factory(module: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_test_{module}", CONVERTERS / f"{module}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.build()


def _source_outputs(example: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The source model computed here, independently of tritonops."""
    if example == "mlp":
        import torch

        with torch.no_grad():
            return {"logits": _factory("mlp")(torch.from_numpy(x)).numpy()}
    est = _factory("iris_sklearn")
    return {"label": est.predict(x), "probabilities": est.predict_proba(x).astype(np.float32)}


def _inputs(example: str) -> tuple[str, np.ndarray]:
    if example == "mlp":
        return "x", np.random.default_rng(7).uniform(-1, 1, size=(16, 512)).astype(np.float32)
    return "input", np.load(CONVERTERS / "iris_val.npz")["input"][:16]


def test_every_example_yields_fp32_fp16_int8_versions_within_tolerance(converted: Converted) -> None:
    assert converted.report["written"] is True
    for base in converted.models.values():
        for target, suffix in SUFFIXES.items():
            model = base + suffix
            man = ModelManifest.load(converted.root / model / MANIFEST_NAME)
            assert list(man.versions) == [1], model
            v = man.versions[1]
            assert v.source["target"] == target
            assert {f.path for f in v.files} == {"model.onnx", "model.py"}
            acc = v.metadata["accuracy"]["outputs"]
            tol = v.metadata["tolerance"]
            assert acc and tol, model
            for out, errs in acc.items():
                assert errs["violations"] == [], (model, out, errs)
                assert errs["kind"] == (
                    "labels" if out == "label" else ("probabilities" if out == "probabilities" else "scores")
                )
                assert {s_["dims"]["batch"] for s_ in v.metadata["accuracy"]["shapes"]} == {1, 8, 64}
                for k, limit in tol[out].items():
                    if k != "mismatch" and out != "label":
                        assert errs[k] <= limit, (model, out, k, errs[k], limit)
            sp = v.metadata["speed"]["batches"]
            assert set(sp) == {"1", "32"} and all(b["p50_ms"] > 0 and b["throughput_per_s"] > 0 for b in sp.values())
    assert validate_repository(converted.root) == []
    code, _, err = run_cli("repo", "validate", str(converted.root))
    assert code == 0, err


def test_exported_graphs_keep_the_dynamic_batch_dimension(converted: Converted) -> None:
    for base in converted.models.values():
        m = onnx.load(str(converted.root / base / "1" / "model.onnx"))
        dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
        assert not dim0.HasField("dim_value"), f"{base}: batch dimension exported static"
    mlp = ModelManifest.load(converted.root / converted.models["mlp"] / MANIFEST_NAME)
    assert mlp.versions[1].source["exporter"] in ("dynamo", "torchscript")
    iris = ModelManifest.load(converted.root / converted.models["iris_sklearn"] / MANIFEST_NAME)
    assert iris.versions[1].source["zipmap"] is False


def test_int8_is_smaller_and_faster_than_fp32_for_the_mlp(converted: Converted) -> None:
    base = converted.models["mlp"]
    fp32 = ModelManifest.load(converted.root / base / MANIFEST_NAME).versions[1]
    int8 = ModelManifest.load(converted.root / f"{base}-int8" / MANIFEST_NAME).versions[1]
    size = {v.source["target"]: next(f.size for f in v.files if f.path == "model.onnx") for v in (fp32, int8)}
    assert size["onnx-int8-dynamic"] < size["onnx"] / 3
    # Loose: the test machine is shared; bench/convert.py measures the real ratio.
    t32 = fp32.metadata["speed"]["batches"]["32"]["throughput_per_s"]
    t8 = int8.metadata["speed"]["batches"]["32"]["throughput_per_s"]
    assert t8 > t32


def _upload_model(client: Any, bucket: str, prefix: str, folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    # Version files first, then config.pbtxt: what makes the model loadable goes up last.
    files.sort(key=lambda p: p.name == "config.pbtxt")
    for p in files:
        key = f"{prefix}/{folder.name}/{p.relative_to(folder).as_posix()}".lstrip("/")
        client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())


@pytest.mark.parametrize("example", ["mlp", "iris_sklearn"])
def test_real_triton_serves_every_version_matching_the_source(
    converted: Converted, dev_stack: Stack, example: str
) -> None:
    import tritonclient.http as httpclient

    rcfg = dev_stack.config.region("eu-west-1")
    s3 = s3_client(rcfg)
    base = converted.models[example]
    name, x = _inputs(example)
    ref = _source_outputs(example, x)
    server = rcfg.servers[0]
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)
    try:
        for target, suffix in SUFFIXES.items():
            model = base + suffix
            _upload_model(s3, rcfg.bucket_name, rcfg.prefix, converted.root / model)
            t0 = time.monotonic()
            client.load_model(model)
            assert client.is_model_ready(model), model
            inp = httpclient.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            res = client.infer(model, [inp])
            got = {k: res.as_numpy(k) for k in ref}
            if "label" in got:  # served as [batch, 1] (dims [1], reshape []): compare per sample
                got["label"] = got["label"].reshape(-1)
            tol = TargetSpec(kind=TargetKind(target)).effective_tolerance()
            errs = gate(ref, got, tol)
            assert all(not e.violations for e in errs), (model, [(e.name, e.violations) for e in errs])
            client.unload_model(model)
            print(f"{model}: loaded and answered in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    finally:
        client.close()


def test_conversion_leaves_nothing_in_the_working_directory(converted: Converted) -> None:
    # onnxruntime's symbolic shape inference drops sym_shape_infer_temp.onnx into the cwd on failure.
    assert converted.left_in_cwd == []


def test_manifest_json_is_what_the_cli_reported(converted: Converted) -> None:
    targets = [t for r in converted.report["recipes"] for t in r["targets"]]
    assert len(targets) == 8 and all(t["status"] == "written" and t["version"] == 1 for t in targets)
    for t in targets:
        man = json.loads((converted.root / t["model"] / MANIFEST_NAME).read_text())
        assert man["versions"]["1"]["metadata"]["accuracy"] == t["accuracy"]
