"""Bad conversion recipes: each case runs `tritonops convert RECIPE` and must be refused in one line
naming the recipe file and the key, before anything is converted or written.

Categories: top level and YAML, source (torch, sklearn, onnx), inputs, targets and tolerances,
triton settings, destination, validation/calibration data, speed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.badinput.harness import assert_refused, invoke, tree_hash

BASE: dict[str, Any] = {
    "format_version": 1,
    "source": {
        "kind": "torch",
        "factory": "tiny:build",
        "outputs": ["y"],
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 8]}],
    },
    "targets": ["onnx"],
    "triton": {"max_batch_size": 16, "runtime": "onnxruntime-python"},
    "destination": {"repository": "repo", "model": "tiny"},
    "speed": {"iterations": 5, "budget_s": 0.1},
}


def _set(path: str, value: Any) -> dict[str, Any]:
    """BASE with one dotted key set (or deleted when value is ...)."""
    d = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    cur: Any = d
    for p in parents:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if value is ...:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


SKL = {"kind": "sklearn", "factory": "m:build", "inputs": [{"name": "x", "shape": ["batch", 4]}]}

# (id, recipe data, strings the line must contain besides the file name)
CASES: list[tuple[str, Any, list[str]]] = [
    ("format-version", _set("format_version", 9), ["format_version"]),
    ("unknown-top-key", _set("colour", "blue"), ["colour: unknown key"]),
    ("no-source", _set("source", ...), ["source: required key is missing"]),
    ("source-kind-unknown", _set("source.kind", "tensorflow"), ["source"]),
    ("source-kind-missing", _set("source.kind", ...), ["source"]),
    ("torch-factory-no-colon", _set("source.factory", "tiny"), ["source.factory", "module:function"]),
    ("torch-factory-missing", _set("source.factory", ...), ["source.factory"]),
    ("torch-opset-str", _set("source.opset", "new"), ["source.opset"]),
    ("torch-outputs-str", _set("source.outputs", 3), ["source.outputs"]),
    ("torch-unknown-key", _set("source.weights", "w.pt"), ["source.weights: unknown key"]),
    ("input-dtype", _set("source.inputs.0.dtype", "complex64"), ["source.inputs[0].dtype", "complex64"]),
    ("input-shape-empty", _set("source.inputs.0.shape", []), ["source.inputs[0].shape"]),
    ("input-shape-zero", _set("source.inputs.0.shape", ["batch", 0]), ["source.inputs[0].shape"]),
    ("input-shape-neg", _set("source.inputs.0.shape", [-1, 8]), ["source.inputs[0].shape"]),
    ("input-shape-name", _set("source.inputs.0.shape", ["bat ch", 8]), ["source.inputs[0].shape"]),
    ("input-low-high", _set("source.inputs.0.low", 5.0) | {}, []),
    ("input-name-missing", _set("source.inputs.0.name", ...), ["source.inputs[0].name"]),
    ("input-unknown-key", _set("source.inputs.0.mean", 0), ["source.inputs[0].mean: unknown key"]),
    ("inputs-map", _set("source.inputs", {"x": 1}), ["source.inputs"]),
    ("sklearn-two-ways", {**BASE, "source": {**SKL, "path": "m.pkl"}}, ["source", "exactly one of 'factory' or 'path'"]),
    ("sklearn-neither", {**BASE, "source": {k: v for k, v in SKL.items() if k != "factory"}}, ["source"]),
    ("sklearn-two-inputs", {**BASE, "source": {**SKL, "inputs": SKL["inputs"] * 2}}, ["source", "exactly one input"]),
    ("onnx-no-path", {**BASE, "source": {"kind": "onnx"}}, ["source"]),
    ("targets-empty", _set("targets", []), ["targets"]),
    ("targets-unknown", _set("targets", ["onnx", "onnx-int4"]), ["targets[1]"]),
    ("targets-dup", _set("targets", ["onnx", "onnx"]), ["targets"]),
    ("target-tolerance-key", _set("targets", [{"kind": "onnx", "tolerance": {"max_err": 1}}]), ["max_err"]),
    ("target-tolerance-neg", _set("targets", [{"kind": "onnx", "tolerance": {"atol": -1}}]), ["targets[0]"]),
    ("target-unknown-key", _set("targets", [{"kind": "onnx", "fast": True}]), ["targets[0].fast: unknown key"]),
    ("triton-batch-neg", _set("triton.max_batch_size", -1), ["triton.max_batch_size"]),
    ("triton-runtime", _set("triton.runtime", "tensorflow"), ["triton.runtime"]),
    ("triton-instance-kind", _set("triton.instance_group", {"kind": "KIND_TPU"}), ["triton.instance_group.kind"]),
    ("triton-instance-count", _set("triton.instance_group", {"count": 0}), ["triton.instance_group.count"]),
    ("triton-queue-delay", _set("triton.dynamic_batching", {"max_queue_delay_microseconds": -1}),
     ["triton.dynamic_batching.max_queue_delay_microseconds"]),
    ("triton-unknown-key", _set("triton.gpus", 2), ["triton.gpus: unknown key"]),
    ("destination-model", _set("destination.model", "bad name!"), ["destination.model", "bad name!"]),
    ("destination-unknown", _set("destination.bucket", "s3://x"), ["destination.bucket: unknown key"]),
    ("validation-samples", _set("validation", {"samples": 1}), ["validation.samples"]),
    ("calibration-samples", _set("calibration", {"samples": 10**6}), ["calibration.samples"]),
    ("speed-iterations", _set("speed.iterations", 0), ["speed.iterations"]),
    ("speed-budget", _set("speed.budget_s", 0), ["speed.budget_s"]),
    ("speed-threads", _set("speed.threads", 0), ["speed.threads"]),
    ("top-list", [1, 2], ["(top level)", "expected a mapping"]),
    ("top-scalar", "recipe", ["(top level)", "expected a mapping"]),
    ("top-empty", None, ["(top level)", "empty file"]),
]
# low >= high: the message names both numbers.
CASES = [c if c[0] != "input-low-high" else (c[0], _set("source.inputs.0", {"name": "x", "shape": [2], "low": 5.0, "high": 1.0}),
                                             ["source.inputs[0]", "greater than low"]) for c in CASES]


@pytest.mark.parametrize(("data", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipe(tmp_path: Path, data: Any, names: list[str]) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("" if data is None else yaml.safe_dump(data, sort_keys=False))
    before = tree_hash(tmp_path)
    res = invoke(["convert", str(recipe)])
    assert_refused(res, [str(recipe), *names], code=1)
    assert tree_hash(tmp_path) == before


RAW_CASES = [
    ("unclosed", b"source: [unclosed\n", ["malformed YAML", "line"]),
    ("tab", b"source:\n\tkind: torch\n", ["malformed YAML"]),
    ("latin1", b"source:\n  kind: caf\xe9\n", ["not UTF-8"]),
    ("binary", b"\x00\x01\x02\xff\xfe", ["not UTF-8"]),
]


@pytest.mark.parametrize(("raw", "names"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_recipe_that_is_not_yaml(tmp_path: Path, raw: bytes, names: list[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(raw)
    before = tree_hash(tmp_path)
    assert_refused(invoke(["convert", str(recipe)]), [str(recipe), *names], code=1)
    assert tree_hash(tmp_path) == before
