"""The streamed ONNX reader agrees with onnx.load, and never reads the weights."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.repo.conftest import make_onnx_model
from tritonops.errors import RepositoryError
from tritonops.repo.onnx_io import read_graph_io
from tritonops.repo.validate import onnx_signature


def _big_model(path: Path, weight_mib: int, list_initializer_as_input: bool) -> None:
    w = numpy_helper.from_array(np.zeros((weight_mib * 1024, 256), np.float32), "W")
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", weight_mib * 1024])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 256])
    inputs = [x]
    if list_initializer_as_input:  # what IR < 4 exporters do
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [weight_mib * 1024, 256]))
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "mm", inputs, [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize("listed", [True, False])
def test_agrees_with_onnx_load(tmp_path: Path, listed: bool) -> None:
    p = tmp_path / "model.onnx"
    _big_model(p, 1, listed)
    m = onnx.load(str(p))
    ins, outs, inits = read_graph_io(p)
    assert [i.SerializeToString() for i in ins] == [i.SerializeToString() for i in m.graph.input]
    assert [o.SerializeToString() for o in outs] == [o.SerializeToString() for o in m.graph.output]
    assert inits == {"W"}
    assert onnx_signature(p) == ({"X": (1, [-1, 1024])}, {"Y": (1, [-1, 256])})


def test_weights_are_not_read_into_memory(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    _big_model(p, 32, False)  # 32 MiB of weights
    assert p.stat().st_size > 32 << 20
    tracemalloc.start()
    try:
        onnx_signature(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak} bytes for a {p.stat().st_size}-byte model"


def test_generated_test_model(tmp_path: Path) -> None:
    p = make_onnx_model(tmp_path / "model.onnx")
    assert onnx_signature(p) == ({"X": (1, [-1, 3])}, {"Y": (1, [-1, 3])})


@pytest.mark.parametrize("data", [b"", b"not an onnx file at all", b"\x3a\xff\xff\xff\x0f"])
def test_garbage_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(data)
    with pytest.raises(RepositoryError, match=rf"^{p}: not a readable ONNX model"):
        read_graph_io(p)


def test_truncated_model(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    _big_model(p, 1, False)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(RepositoryError, match="not a readable ONNX model"):
        read_graph_io(p)
