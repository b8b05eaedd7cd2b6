"""The config generator (`convert`, `repo add`) never writes a config Triton's rules reject.

Every config generated for a table of ONNX graphs (scalars, per-sample scalars, dynamic dims,
several dtypes) goes through `repo validate`'s checks, Triton's rules included, with no finding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from tritonops.convert.export import graph_io
from tritonops.convert.model_folder import MODEL_PY, make_config
from tritonops.convert.recipe import TritonSpec
from tritonops.repo.model_config import config_to_text, parse_config_text
from tritonops.repo.repository import generate_onnx_config
from tritonops.repo.validate import check_config

F, I64, B, H = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT16


def graph(
    inputs: list[tuple[str, int, list[Any]]], outputs: list[tuple[str, int, list[Any]]], nodes: list[Any]
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


GRAPHS = {
    # a scalar output of a non-batching graph: the case the generator used to get wrong
    "scalar-sum": graph([("X", F, [3])], [("S", F, [])], [helper.make_node("ReduceSum", ["X"], ["S"], keepdims=0)]),
    "scalar-in-out": graph([("X", F, [])], [("Y", F, [])], [helper.make_node("Identity", ["X"], ["Y"])]),
    # per-sample scalar: [N] -> a label per row
    "label-per-row": graph(
        [("X", F, ["N", 4])], [("L", I64, ["N"])], [helper.make_node("ArgMax", ["X"], ["L"], axis=1, keepdims=0)]
    ),
    "dynamic-seq": graph(
        [("X", F, ["N", "S", 8])], [("Y", F, ["N", "S", 8])], [helper.make_node("Relu", ["X"], ["Y"])]
    ),
    "static": graph([("X", F, [2, 3])], [("Y", F, [2, 3])], [helper.make_node("Neg", ["X"], ["Y"])]),
    "several-dtypes": graph(
        [("X", H, ["N", 4]), ("M", B, ["N", 4])],
        [("Y", H, ["N", 4]), ("Z", B, ["N", 4])],
        [helper.make_node("Abs", ["X"], ["Y"]), helper.make_node("Not", ["M"], ["Z"])],
    ),
}


def batchable(m: onnx.ModelProto) -> bool:
    ins, outs = graph_io(m)
    return all(t.shape and isinstance(t.shape[0], str) for t in ins + outs)


def assert_valid(tmp: Path, name: str, cfg: Any, files: dict[str, str | onnx.ModelProto]) -> None:
    vd = tmp / name / "1"
    vd.mkdir(parents=True)
    for fname, content in files.items():
        if isinstance(content, str):
            (vd / fname).write_text(content)
        else:
            onnx.save(content, str(vd / fname))
    text = config_to_text(cfg)
    cfg = parse_config_text(text, name)  # what Triton reads is the text
    problems = check_config(cfg, tmp / name / "config.pbtxt", text, model_name=name, version_dirs=[vd])
    assert problems == [], f"{name}:\n{text}\n" + "\n".join(map(str, problems))


@pytest.mark.parametrize("gname", sorted(GRAPHS))
def test_repo_add_config(gname: str, tmp_path: Path) -> None:
    m = GRAPHS[gname]
    path = tmp_path / "src.onnx"
    onnx.save(m, str(path))
    cfg = generate_onnx_config("m", path)
    cfg.version_policy.specific.versions.append(1)
    assert_valid(tmp_path, "m", cfg, {"model.onnx": m})


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnxruntime-python"])
@pytest.mark.parametrize("gname", sorted(GRAPHS))
def test_convert_config(gname: str, runtime: str, tmp_path: Path) -> None:
    m = GRAPHS[gname]
    ins, outs = graph_io(m)
    sizes = [0, 4] if batchable(m) else [0]
    for mbs in sizes:
        spec = TritonSpec(max_batch_size=mbs, warmup=True, runtime=runtime)  # type: ignore[arg-type]
        cfg = make_config(f"m{mbs}", spec, ins, outs, runtime)
        cfg.version_policy.specific.versions.append(1)
        files: dict[str, str | onnx.ModelProto] = {"model.onnx": m}
        if runtime == "onnxruntime-python":
            files["model.py"] = MODEL_PY
        assert_valid(tmp_path, f"m{mbs}", cfg, files)
        scalar_outs = [o for o in cfg.output if list(o.dims) == [1] and o.HasField("reshape")]
        assert not (mbs == 0 and scalar_outs), "an empty reshape on a non-batching model"


def test_repo_add_refuses_an_ensemble_triton_rejects(tmp_path: Path) -> None:
    """`repo add` checks an ensemble against the models already in the repository."""
    from tests.repo.conftest import make_python_model, python_config
    from tritonops.errors import RepositoryError
    from tritonops.repo.repository import add_version

    root = tmp_path / "repo"
    add_version(root, "add", make_python_model(tmp_path / "src"), config=python_config(tmp_path / "c.pbtxt", mbs=8))
    ens = (
        'platform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'ensemble_scheduling { step [ { model_name: "add" model_version: -1 '
        'input_map { key: "INPUT0" value: "IN" } output_map { key: "OUTPUT0" value: "OUT" } } ] }\n'
    )
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / ".keep").write_text("")
    (tmp_path / "e.pbtxt").write_text(ens)
    with pytest.raises(RepositoryError, match="inconsistent data type: TYPE_INT32"):
        add_version(root, "e", tmp_path / "e", config=tmp_path / "e.pbtxt")
    assert not (root / "e").exists()
    (tmp_path / "e.pbtxt").write_text(ens.replace("TYPE_INT32", "TYPE_FP32"))
    add_version(root, "e", tmp_path / "e", config=tmp_path / "e.pbtxt")
