"""Builders for small real models (python backend, ONNX); a helper that serves a repository from Triton."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.models import python_model

PY_CONFIG = """
backend: "python"
max_batch_size: {mbs}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def make_python_model(folder: Path, factor: float = 2.0, extra: dict[str, bytes] | None = None) -> Path:
    """A folder holding model.py that multiplies INPUT0 by ``factor``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(python_model(factor, input="INPUT0", output="OUTPUT0"))
    for name, data in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def python_config(path: Path, mbs: int = 0, extra: str = "") -> Path:
    path.write_text(PY_CONFIG.format(mbs=mbs) + extra)
    return path


def make_onnx_model(path: Path, batch: bool = True, elem: int = 1) -> Path:
    """Y = X + 1 with X, Y of shape [N, 3] (N symbolic when ``batch``), element type ``elem``."""
    import onnx
    from onnx import TensorProto, helper

    first: Any = "N" if batch else 2
    x = helper.make_tensor_value_info("X", elem, [first, 3])
    y = helper.make_tensor_value_info("Y", elem, [first, 3])
    one = helper.make_tensor("one", elem, [1], [1])
    node = helper.make_node("Add", ["X", "one"], ["Y"])
    graph = helper.make_graph([node], "add1", [x], [y], initializer=[one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    assert TensorProto.FLOAT == 1
    return path


def serve_and_infer(
    stack: Any,
    root: Path,
    model: str,
    x: np.ndarray,
    region: str = "eu-west-1",
    output: str = "OUTPUT0",
    input_name: str = "INPUT0",
    also: tuple[str, ...] = (),
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Upload ``root/<model>`` (and ``also`` models) to the region's bucket as they are on disk, load
    the model on the region's real Triton, infer once, and return (output, repository index rows)."""
    import tritonclient.http as httpclient

    from tritonops.store.s3 import s3_client

    rcfg = stack.config.region(region)
    s3 = s3_client(rcfg)
    for name in (*also, model):
        base = root / name
        files = sorted(p for p in base.rglob("*") if p.is_file())
        # Version files first, then config.pbtxt: the order sync will publish in.
        files.sort(key=lambda p: p.name == "config.pbtxt")
        for p in files:
            key = f"{rcfg.prefix}/{p.relative_to(root).as_posix()}".lstrip("/")
            s3.put_object(Bucket=rcfg.bucket_name, Key=key, Body=p.read_bytes())
    client = httpclient.InferenceServerClient(
        rcfg.servers[0].http_url.removeprefix("http://"), connection_timeout=10, network_timeout=120
    )
    try:
        client.load_model(model)
        inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer(model, [inp]).as_numpy(output)
        index = [r for r in client.get_model_repository_index() if r.get("name") == model]
        client.unload_model(model)
        for name in also:
            client.unload_model(name)
        return y, index
    finally:
        client.close()


def serve_every_python_model(stack: Any, root: Path, region: str = "eu-west-1") -> list[str]:
    """Load every python-backend model of a valid repository on the real Triton and infer once.

    Each model is published under a unique name (only the ``name`` line of its config differs), so
    tests reusing a name like "m" never see each other's files in the shared bucket. Returns the
    names served. Ensembles are served by their own test (their steps name the member models).
    """
    import tritonclient.http as httpclient

    from tritonops.repo.model_config import config_to_text, read_config
    from tritonops.repo.repository import list_repository
    from tritonops.store.s3 import s3_client

    rcfg = stack.config.region(region)
    s3 = s3_client(rcfg)
    client = httpclient.InferenceServerClient(
        rcfg.servers[0].http_url.removeprefix("http://"), connection_timeout=10, network_timeout=120
    )
    served = []
    try:
        for entry in list_repository(root):
            cfg = read_config(root / entry["model"] / "config.pbtxt")
            if cfg.backend != "python":
                continue
            name = f"{entry['model']}-{uuid.uuid4().hex[:8]}"
            cfg.name = name
            base = f"{rcfg.prefix}/{name}".lstrip("/")
            for v in entry["versions"]:
                vdir = root / entry["model"] / str(v["version"])
                for p in sorted(q for q in vdir.rglob("*") if q.is_file()):
                    s3.put_object(
                        Bucket=rcfg.bucket_name,
                        Key=f"{base}/{p.relative_to(root / entry['model']).as_posix()}",
                        Body=p.read_bytes(),
                    )
            s3.put_object(
                Bucket=rcfg.bucket_name, Key=f"{base}/config.pbtxt", Body=config_to_text(cfg).encode()
            )
            client.load_model(name)
            inputs = []
            for i in cfg.input:
                shape = ([2] if cfg.max_batch_size > 0 else []) + [d if d > 0 else 1 for d in i.dims]
                inp = httpclient.InferInput(i.name, shape, "FP32")
                inp.set_data_from_numpy(np.ones(shape, dtype=np.float32))
                inputs.append(inp)
            y = client.infer(name, inputs).as_numpy(cfg.output[0].name)
            assert y is not None and np.isfinite(y).all(), (name, y)
            ready = sorted(
                int(r["version"])
                for r in client.get_model_repository_index()
                if r.get("name") == name and r.get("state") == "READY"
            )
            assert ready == entry["live_versions"], (name, ready, entry["live_versions"])
            client.unload_model(name)
            served.append(name)
    finally:
        client.close()
    return served


@pytest.fixture
def repo_root(tmp_path: Path, dev_stack: Any) -> Iterator[Path]:
    """A repository path; whatever valid repository a test builds there is then served by the real Triton."""
    from tritonops.repo.validate import validate_repository

    root = tmp_path / "model_repos" / "test"
    yield root
    if root.is_dir() and not validate_repository(root):
        serve_every_python_model(dev_stack, root)
