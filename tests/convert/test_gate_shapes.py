"""The gate sees every shape, rejects NaN, judges each output kind fairly, and fails in one line.

Models here are not the project's: torch.nn.TransformerEncoder, scikit-learn estimators on the
datasets scikit-learn bundles, and ONNX graphs built with onnx.helper.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from tests.convert.conftest import run_cli
from tritonops.convert import convert
from tritonops.convert.accuracy import gate, output_errors
from tritonops.convert.recipe import TargetKind, TargetSpec
from tritonops.errors import RepositoryError
from tritonops.repo.manifest import MANIFEST_NAME
from tritonops.repo.repository import add_version


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity, which Python's json accepts by default."""

    def refuse(c: str) -> None:
        raise ValueError(f"not JSON: {c}")

    return json.loads(text, parse_constant=refuse)


def write_recipe(folder: Path, data: dict[str, Any], name: str = "r.yaml") -> Path:
    base: dict[str, Any] = {
        "format_version": 1,
        "destination": {"repository": "repo", "model": "m"},
        "speed": {"iterations": 3, "budget_s": 0.05, "batches": [1]},
    }
    p = folder / name
    p.write_text(yaml.safe_dump({**base, **data}, sort_keys=False))
    return p


# ------------------------------------------------------------------------------ shapes: a transformer

ENCODER = textwrap.dedent(
    """\
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(8, 32)
            layer = torch.nn.TransformerEncoderLayer(
                d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
            )
            self.enc = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.head(self.enc(self.proj(x)).mean(dim=1))

    def build():
        return Encoder().eval()
    """
)


def test_int8_static_transformer_right_at_seq_16_is_rejected_for_seq_1(tmp_path: Path) -> None:
    (tmp_path / "enc.py").write_text(ENCODER)
    # Calibrated at the typical sequence length only: what a user with seq-16 data does.
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.uniform(-1, 1, (32, 16, 8)).astype(np.float32))
    recipe = write_recipe(
        tmp_path,
        {
            "source": {
                "kind": "torch",
                "factory": "enc:build",
                "inputs": [{"name": "x", "shape": ["batch", "seq", 8]}],
                "outputs": ["y"],
            },
            "targets": ["onnx", "onnx-int8-static"],
            "validation": {"samples": 16, "dims": {"seq": {"min": 1, "typical": 16, "max": 32}}},
            "calibration": {"data": "calib.npz"},
            "triton": {"max_batch_size": 8, "runtime": "onnxruntime-python"},
        },
    )
    code, out, err = run_cli("convert", str(recipe), "-o", "json")
    assert code == 1, err
    report = strict_json(out)
    rr = report["recipes"][0]
    assert rr["export"]["dims"] == {
        "batch": {"min": 1, "typical": 8, "max": 8, "origin": "default+triton.max_batch_size"},
        "seq": {"min": 1, "typical": 16, "max": 32, "origin": "recipe"},
    }
    by_target = {t["target"]: t for t in rr["targets"]}
    shapes = {
        (s["dims"]["batch"], s["dims"]["seq"]): s["outputs"]["y"]
        for s in by_target["onnx-int8-static"]["accuracy"]["shapes"]
    }
    # Each dim at its min, typical and max (the others typical).
    assert set(shapes) == {(8, 16), (1, 16), (8, 1), (8, 32)}
    assert shapes[(8, 16)]["violations"] == [] and shapes[(8, 16)]["norm_max"] < 0.1
    assert shapes[(8, 1)]["norm_max"] > 0.2 and shapes[(8, 1)]["violations"]
    int8 = by_target["onnx-int8-static"]
    assert int8["status"] == "rejected" and "at batch=8 seq=1: norm_max" in int8["reason"]
    assert "at batch=8 seq=16" not in int8["reason"]
    worst = int8["accuracy"]["outputs"]["y"]
    assert worst["worst_at"]["norm_max"] == "batch=8 seq=1" and worst["norm_max"] == shapes[(8, 1)]["norm_max"]
    # fp32 is right at every shape.
    assert by_target["onnx"]["status"] == "passed"
    assert all(not s["outputs"]["y"]["violations"] for s in by_target["onnx"]["accuracy"]["shapes"])
    assert "seq=1" in err and not (tmp_path / "repo").exists()

    # The table output shows every shape checked.
    code, out, _ = run_cli("convert", str(recipe))
    assert code == 1 and "accuracy at each shape checked" in out
    for label in ("batch=1 seq=16", "batch=8 seq=1", "batch=8 seq=16", "batch=8 seq=32"):
        assert label in out


def test_a_declared_range_that_names_no_dim_or_exceeds_max_batch_size_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "enc.py").write_text(ENCODER)
    src = {
        "kind": "torch",
        "factory": "enc:build",
        "inputs": [{"name": "x", "shape": ["batch", "seq", 8]}],
        "outputs": ["y"],
    }
    for dims, message in (
        ({"sequence": {"max": 8}}, "validation.dims: ['sequence'] are not dynamic dimensions"),
        ({"batch": {"max": 64}}, "validation.dims.batch.max: 64 is above triton.max_batch_size (8)"),
        ({"seq": {"min": 9, "max": 4}}, "validation.dims.seq: need min <= typical <= max"),
    ):
        recipe = write_recipe(
            tmp_path,
            {"source": src, "targets": ["onnx"], "validation": {"dims": dims}, "triton": {"max_batch_size": 8}},
        )
        code, out, err = run_cli("convert", str(recipe))
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert message in err, err


# ------------------------------------------------------------------------------------ NaN and Inf

LOG_MODEL = textwrap.dedent(
    """\
    import torch

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x) * 2.0

    def build():
        return Log()
    """
)


def test_nan_or_inf_rejects_and_every_figure_stays_json() -> None:
    ref = {"y": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    for bad in (np.nan, np.inf, -np.inf):
        got = {"y": np.array([[1.0, bad], [3.0, 4.0]], np.float32)}
        errs = gate(ref, got, TargetSpec(kind=TargetKind.onnx).effective_tolerance)
        assert errs[0].violations and "in the target's output" in errs[0].violations[0]
        doc = {"outputs": {e.name: e.to_json() for e in errs}}
        assert strict_json(json.dumps(doc, allow_nan=False)) == doc
        assert doc["outputs"]["y"]["max_abs"] is None
    # NaN in both at the same place is not "equal": the target is still rejected.
    both = {"y": np.array([[np.nan, 2.0]], np.float32)}
    assert output_errors("y", both["y"], both["y"]).violations == ["1 NaN and 0 Inf values in the target's output"]


def test_a_model_that_outputs_nan_is_rejected_and_the_report_is_strict_json(tmp_path: Path) -> None:
    (tmp_path / "logm.py").write_text(LOG_MODEL)
    recipe = write_recipe(
        tmp_path,
        {
            "source": {
                "kind": "torch",
                "factory": "logm:build",
                "inputs": [{"name": "x", "shape": ["batch", 4], "low": -1.0, "high": 1.0}],
                "outputs": ["y"],
            },
            "targets": ["onnx"],
            "triton": {"max_batch_size": 4},
        },
    )
    code, out, err = run_cli("convert", str(recipe), "-o", "json")
    assert code == 1 and "NaN" in err and err.count("\n") == 1
    t = strict_json(out)["recipes"][0]["targets"][0]
    assert t["status"] == "rejected" and t["accuracy"]["outputs"]["y"]["norm_max"] is None
    assert not (tmp_path / "repo").exists()


def test_a_manifest_never_holds_a_bare_nan(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "model.py").write_text("# placeholder\n")
    cfg = tmp_path / "config.pbtxt"
    cfg.write_text(
        'name: "m"\nbackend: "python"\ninput [{name: "x" data_type: TYPE_FP32 dims: [1]}]\n'
        'output [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n'
    )
    with pytest.raises(RepositoryError, match="without NaN or Infinity"):
        add_version(tmp_path / "repo", "m", tmp_path / "v", config=cfg, metadata={"err": float("nan")})
    assert not (tmp_path / "repo" / "m").exists()
    add_version(tmp_path / "repo", "m", tmp_path / "v", config=cfg, metadata={"err": None})
    strict_json((tmp_path / "repo" / "m" / MANIFEST_NAME).read_text())


# --------------------------------------------------------------------------- scikit-learn: kinds

SKLEARN = textwrap.dedent(
    """\
    import numpy as np
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def data():
        x, y = load_wine(return_X_y=True)
        return train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0)

    def forest(shuffled=False):
        x_train, _, y_train, _ = data()
        if shuffled:
            y_train = np.random.default_rng(0).permutation(y_train)
        est = make_pipeline(StandardScaler(), RandomForestClassifier(random_state=0))
        return est.fit(x_train, y_train)

    def build():
        return forest()
    """
)


def _forest_recipe(tmp_path: Path, targets: list[Any]) -> Path:
    import importlib.util
    import sys

    (tmp_path / "wine_rf.py").write_text(SKLEARN)
    spec = importlib.util.spec_from_file_location("_wine_rf_test", tmp_path / "wine_rf.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    x_train, x_test, _, _ = mod.data()
    np.savez(tmp_path / "val.npz", input=np.concatenate([x_test, x_train]))
    return write_recipe(
        tmp_path,
        {
            "source": {
                "kind": "sklearn",
                "factory": "wine_rf:build",
                "inputs": [{"name": "input", "shape": ["batch", 13]}],
            },
            "targets": targets,
            "validation": {"data": "val.npz", "dims": {"batch": {"typical": 64}}},
            "triton": {"max_batch_size": 64, "runtime": "onnxruntime-python"},
        },
    )


def test_random_forest_vote_flips_pass_and_wrong_forests_are_rejected(tmp_path: Path) -> None:
    recipe = _forest_recipe(tmp_path, ["onnx", {"kind": "onnx-int8-dynamic", "optional": True}])
    code, out, err = run_cli("convert", str(recipe), "-o", "json")
    report = strict_json(out)
    by_target = {t["target"]: t for t in report["recipes"][0]["targets"]}
    fp32 = by_target["onnx"]
    probs = fp32["accuracy"]["outputs"]["probabilities"]
    labels = fp32["accuracy"]["outputs"]["label"]
    # The float32 threshold flip: one tree's vote (1/100) on a few rows, every label the same.
    assert probs["kind"] == "probabilities" and labels["kind"] == "labels"
    assert 1e-4 < probs["max_abs"] <= 0.02 and labels["mismatch"] == 0.0
    assert fp32["status"] == "written" and fp32["tolerance"]["probabilities"] == {"max_abs": 0.1, "p99_abs": 0.02}

    # int8 of a tree ensemble quantises nothing: one line; the target is optional, so fp32 is written.
    int8 = by_target["onnx-int8-dynamic"]
    assert int8["status"] == "failed" and int8["optional"] is True
    assert "no operator in the graph can be quantised to int8" in int8["reason"]
    assert "TreeEnsembleClassifier" in int8["reason"]
    assert code == 4, err
    assert err.count("\n") == 1 and err.startswith("warning: not written: m-int8 (onnx-int8-dynamic, optional)")
    assert report["written"] is True and (tmp_path / "repo" / "m" / MANIFEST_NAME).is_file()
    assert not (tmp_path / "repo" / "m-int8").exists()

    # A forest trained on shuffled labels, and the right forest's ONNX with perturbed thresholds:
    # the same defaults reject both.
    import _wine_rf_test as mod  # type: ignore[import-not-found]
    import onnxruntime as ort
    from skl2onnx import to_onnx

    _, x_test, _, _ = mod.data()
    good = mod.forest()
    ref = {"label": good.predict(x_test), "probabilities": good.predict_proba(x_test).astype(np.float32)}
    tol = TargetSpec(kind=TargetKind.onnx).effective_tolerance

    def onnx_outputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        lab, pr = sess.run(None, {sess.get_inputs()[0].name: x_test})
        return {"label": lab, "probabilities": pr}

    wrong = mod.forest(shuffled=True)
    shuffled = to_onnx(wrong, x_test[:1], options={id(wrong): {"zipmap": False}}, target_opset=17)
    errs = {e.name: e for e in gate(ref, onnx_outputs(shuffled), tol)}
    assert errs["label"].violations and errs["probabilities"].violations

    perturbed = to_onnx(good, x_test[:1], options={id(good): {"zipmap": False}}, target_opset=17)
    trees = next(n for n in perturbed.graph.node if n.op_type == "TreeEnsembleClassifier")
    values = next(a for a in trees.attribute if a.name == "nodes_values")
    values.floats[:] = [v + 0.5 for v in values.floats]  # half a standard deviation (scaled inputs)
    errs = {e.name: e for e in gate(ref, onnx_outputs(perturbed), tol)}
    assert errs["probabilities"].violations, errs["probabilities"]
    # And the unperturbed conversion passes the same gate.
    ok = gate(ref, onnx_outputs(to_onnx(good, x_test[:1], options={id(good): {"zipmap": False}})), tol)
    assert all(not e.violations for e in ok)


@pytest.mark.parametrize(
    ("loader", "estimator"),
    [("load_breast_cancer", "GradientBoostingClassifier"), ("load_iris", "LogisticRegression")],
)
def test_other_bundled_classifiers_pass_fp32_with_the_defaults(tmp_path: Path, loader: str, estimator: str) -> None:
    module = {"GradientBoostingClassifier": "sklearn.ensemble", "LogisticRegression": "sklearn.linear_model"}
    (tmp_path / "clf.py").write_text(
        textwrap.dedent(
            f"""\
            import numpy as np
            from sklearn.datasets import {loader}
            from {module[estimator]} import {estimator}
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            def build():
                x, y = {loader}(return_X_y=True)
                return make_pipeline(StandardScaler(), {estimator}(random_state=0)).fit(x.astype(np.float32), y)
            """
        )
    )
    from sklearn import datasets

    x = getattr(datasets, loader)(return_X_y=True)[0].astype(np.float32)
    np.savez(tmp_path / "val.npz", input=x)
    recipe = write_recipe(
        tmp_path,
        {
            "source": {
                "kind": "sklearn",
                "factory": "clf:build",
                "inputs": [{"name": "input", "shape": ["batch", x.shape[1]]}],
            },
            "targets": ["onnx"],
            "validation": {"data": "val.npz"},
            "triton": {"max_batch_size": 16},
        },
    )
    report = convert([recipe])
    t = report.recipes[0].targets[0]
    assert t.status == "written", t.reason
    assert {o["kind"] for o in t.accuracy["outputs"].values()} == {"labels", "probabilities"}


# ------------------------------------------------------------------------------ operators ORT refuses


def _onnx_model(path: Path, nodes: list[onnx.NodeProto], opsets: list[onnx.OperatorSetIdProto]) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize(
    ("nodes", "opsets", "message"),
    [
        (
            [helper.make_node("Relu", ["x"], ["y"])],
            [helper.make_opsetid("", 5)],
            "source: onnxruntime cannot run operator Relu at opset 1",
        ),
        (
            [helper.make_node("FancyOp", ["x"], ["y"], domain="acme.ops")],
            [helper.make_opsetid("", 17), helper.make_opsetid("acme.ops", 1)],
            "source: onnxruntime does not know operator FancyOp (domain 'acme.ops')",
        ),
        (
            [helper.make_node("FancyOp", ["x"], ["y"])],
            [helper.make_opsetid("", 17)],
            "No Op registered for FancyOp with domain_version of 17",
        ),
    ],
)
def test_an_operator_the_runtime_cannot_run_is_one_line_naming_recipe_and_operator(
    tmp_path: Path, nodes: list[onnx.NodeProto], opsets: list[onnx.OperatorSetIdProto], message: str
) -> None:
    _onnx_model(tmp_path / "old.onnx", nodes, opsets)
    recipe = write_recipe(
        tmp_path, {"source": {"kind": "onnx", "path": "old.onnx"}, "targets": ["onnx"], "triton": {"max_batch_size": 4}}
    )
    code, out, err = run_cli("convert", str(recipe))
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "internal error" not in err and str(recipe.resolve()) in err and message in err, err
    assert not (tmp_path / "repo").exists()
