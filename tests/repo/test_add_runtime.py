"""``repo add --runtime``: a user's own model.onnx, served on the local stack's python-only Triton."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import Stack
from tests.convert.conftest import run_cli
from tests.convert.test_examples import _upload_model
from tritonops.convert.model_folder import MODEL_PY
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest
from tritonops.store.s3 import s3_client


def user_model(path: Path) -> None:
    """y = relu(x @ W + b), a dynamic batch: built with onnx.helper, nothing tritonops wrote."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w, b],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def test_repo_add_runtime_python_serves_a_users_onnx_on_the_local_triton(tmp_path: Path, dev_stack: Stack) -> None:
    import uuid

    import tritonclient.http as httpclient

    user_model(tmp_path / "mine.onnx")
    root = tmp_path / "repo"
    model = f"user-onnx-{uuid.uuid4().hex[:8]}"
    code, _, err = run_cli(
        "repo",
        "add",
        model,
        "--from",
        str(tmp_path / "mine.onnx"),
        "--runtime",
        "onnxruntime-python",
        "--repo",
        str(root),
    )
    assert code == 0, err
    cfg = (root / model / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg and "platform" not in cfg
    # convert's own model.py, byte for byte (reused, not copied).
    assert (root / model / "1" / "model.py").read_text() == MODEL_PY
    man = ModelManifest.load(root / model / MANIFEST_NAME)
    assert {f.path for f in man.versions[1].files} == {"model.onnx", "model.py"}
    code, _, err = run_cli("repo", "validate", str(root))
    assert code == 0, err

    rcfg = dev_stack.config.region("eu-west-1")
    _upload_model(s3_client(rcfg), rcfg.bucket_name, rcfg.prefix, root / model)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(tmp_path / "mine.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    client = httpclient.InferenceServerClient(rcfg.servers[0].http_url.removeprefix("http://"), network_timeout=120)
    try:
        client.load_model(model)
        assert client.is_model_ready(model)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(model, [inp]).as_numpy("y")
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        client.unload_model(model)
    finally:
        client.close()


def test_repo_add_runtime_refuses_a_model_served_otherwise_and_bad_input(tmp_path: Path) -> None:
    user_model(tmp_path / "model.onnx")
    root = tmp_path / "repo"
    code, _, err = run_cli(
        "repo", "add", "m", "--from", str(tmp_path / "model.onnx"), "--runtime", "onnxruntime", "--repo", str(root)
    )
    assert code == 0, err
    assert 'platform: "onnxruntime_onnx"' in (root / "m" / "config.pbtxt").read_text()
    assert not (root / "m" / "1" / "model.py").exists()
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    code, _, err = run_cli(
        "repo", "add", "m", "--from", str(tmp_path), "--runtime", "onnxruntime-python", "--repo", str(root)
    )
    assert code == 1 and err.count("\n") == 1
    assert "m is served by platform onnxruntime_onnx, not backend python (--runtime onnxruntime-python)" in err
    code, _, err = run_cli("repo", "add", "m", "--from", str(tmp_path), "--runtime", "tensorflow", "--repo", str(root))
    assert code == 1 and "--runtime: unknown runtime 'tensorflow'" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(
        "repo", "add", "n", "--from", str(tmp_path / "notes.txt"), "--runtime", "onnxruntime", "--repo", str(root)
    )
    assert code == 1 and "needs an .onnx file, or a folder with model.onnx" in err
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
