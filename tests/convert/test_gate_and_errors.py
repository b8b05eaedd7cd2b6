"""The accuracy gate rejects, bad input fails with one line, and in both cases nothing is written."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from tests.convert.conftest import run_cli
from tritonops.convert import convert
from tritonops.convert.export import check_dynamic_dims
from tritonops.convert.recipe import TensorSpec
from tritonops.convert.tensorrt import gpu_available
from tritonops.errors import ConversionError
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest

TINY = textwrap.dedent(
    """\
    import torch

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()

    def broken():
        raise RuntimeError("weights file missing")
    """
)


def tiny_recipe(folder: Path, **changes: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(TINY)
    data: dict[str, object] = {
        "format_version": 1,
        "source": {
            "kind": "torch",
            "factory": "tiny:build",
            "outputs": ["y"],
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 8]}],
        },
        "targets": ["onnx", "onnx-int8-dynamic"],
        "triton": {"max_batch_size": 16, "runtime": "onnxruntime-python"},
        "destination": {"repository": "repo", "model": "tiny"},
        "speed": {"iterations": 5, "budget_s": 0.1},
    }
    data.update(changes)
    p = folder / "tiny.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def snapshot(root: Path) -> dict[str, bytes]:
    return (
        {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        if root.exists()
        else {}
    )


def test_int8_beyond_a_tight_tolerance_is_rejected_with_numbers_and_the_repository_unchanged(
    tmp_path: Path,
) -> None:
    recipe = tiny_recipe(tmp_path)
    root = tmp_path / "repo"
    # A first, passing run: the repository has content that must survive the rejected run untouched.
    code, _, err = run_cli("convert", str(recipe))
    assert code == 0, err
    before = snapshot(root)
    assert "tiny-int8/1/model.onnx" in before

    tight = tiny_recipe(
        tmp_path, targets=["onnx", {"kind": "onnx-int8-dynamic", "tolerance": {"norm_max": 1e-6}}]
    )
    code, out, err = run_cli("convert", str(tight), "-o", "json")
    assert code == 1
    assert err.count("\n") == 1 and "tiny-int8 (onnx-int8-dynamic): rejected" in err and "norm_max" in err
    report = json.loads(out)
    assert report["written"] is False
    by_target = {t["target"]: t for t in report["recipes"][0]["targets"]}
    int8 = by_target["onnx-int8-dynamic"]
    assert int8["status"] == "rejected" and int8["version"] is None
    measured = int8["accuracy"]["outputs"]["y"]["norm_max"]
    assert measured > 1e-6 and f"{measured:.3g}" in int8["reason"]
    # The fp32 target passed, but a recipe is all or nothing: it was not written either.
    assert by_target["onnx"]["status"] == "passed" and by_target["onnx"]["version"] is None
    assert snapshot(root) == before

    # The table output prints the numbers too.
    code, out, _ = run_cli("convert", str(tight))
    assert code == 1 and "norm_max" in out and "rejected" in out
    assert snapshot(root) == before


def test_a_foreign_model_folder_stops_the_run_before_anything_is_written(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path)
    foreign = tmp_path / "repo" / "tiny-int8"
    foreign.mkdir(parents=True)
    (foreign / "config.pbtxt").write_text('name: "tiny-int8"\n')
    code, _, err = run_cli("convert", str(recipe))
    assert code == 1 and "tiny-int8: exists but has no tritonops-manifest.json" in err
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["tiny-int8"]  # "tiny" not written


def test_select_fastest_keeps_one_target(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, targets=["onnx", "onnx-fp16", "onnx-int8-dynamic"])
    report = convert([recipe], select="fastest")
    statuses = sorted(t.status for t in report.recipes[0].targets)
    assert statuses == ["not-selected", "not-selected", "written"]
    written = [t for t in report.recipes[0].targets if t.status == "written"]
    assert (tmp_path / "repo" / written[0].model / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir()) == [written[0].model]


def test_second_run_adds_version_2_and_never_rewrites_version_1(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, targets=["onnx"])
    convert([recipe])
    v1 = (tmp_path / "repo" / "tiny" / "1" / "model.onnx").read_bytes()
    convert([recipe])
    man = ModelManifest.load(tmp_path / "repo" / "tiny" / MANIFEST_NAME)
    assert sorted(man.versions) == [1, 2]
    assert (tmp_path / "repo" / "tiny" / "1" / "model.onnx").read_bytes() == v1
    assert "versions: 2" in (tmp_path / "repo" / "tiny" / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "source": {
                    "kind": "torch",
                    "factory": "nosuch:build",
                    "outputs": ["y"],
                    "inputs": [{"name": "x", "shape": ["batch", 8]}],
                }
            },
            "source.factory: module 'nosuch' not found",
        ),
        (
            {
                "source": {
                    "kind": "torch",
                    "factory": "tiny:nosuch",
                    "outputs": ["y"],
                    "inputs": [{"name": "x", "shape": ["batch", 8]}],
                }
            },
            "module 'tiny' has no function 'nosuch'",
        ),
        (
            {
                "source": {
                    "kind": "torch",
                    "factory": "tiny:broken",
                    "outputs": ["y"],
                    "inputs": [{"name": "x", "shape": ["batch", 8]}],
                }
            },
            "tiny:broken() failed: RuntimeError: weights file missing",
        ),
        (
            {
                "source": {
                    "kind": "torch",
                    "factory": "tiny:build",
                    "outputs": ["y"],
                    "inputs": [{"name": "x", "shape": ["batch", 5]}],
                }
            },
            "source.inputs: the model rejects inputs x=[2, 5] float32",
        ),
        (
            {
                "source": {
                    "kind": "torch",
                    "factory": "tiny:build",
                    "outputs": ["y"],
                    "inputs": [{"name": "x", "dtype": "complex64", "shape": ["batch", 8]}],
                }
            },
            "source.inputs[0].dtype: unsupported dtype 'complex64'",
        ),
        ({"targets": ["onnx", "onnx-int4"]}, "targets[1].kind: Input should be"),
        ({"targets": [{"kind": "onnx", "tolerance": {"max_err": 1}}]}, "unknown tolerance ['max_err']"),
        ({"destination": {"model": "bad name!"}}, "destination.model: model name 'bad name!'"),
        ({"nonsense": 1}, "nonsense: unknown key"),
    ],
)
def test_bad_recipe_one_line_error_nothing_written(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    recipe = tiny_recipe(tmp_path, **change)
    code, out, err = run_cli("convert", str(recipe))
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "repo").exists()


def test_unknown_target_flag(tmp_path: Path) -> None:
    code, _, err = run_cli("convert", str(tiny_recipe(tmp_path)), "--target", "onnx-int3")
    assert code == 1 and "--target: unknown target 'onnx-int3'" in err
    assert not (tmp_path / "repo").exists()


def test_calibration_file_with_wrong_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", x=np.zeros((16, 5), np.float32))
    recipe = tiny_recipe(tmp_path, targets=["onnx", "onnx-int8-static"], calibration={"data": "calib.npz"})
    code, _, err = run_cli("convert", str(recipe))
    assert code == 1 and err.count("\n") == 1
    assert (
        "calibration.data" in err
        and "calib.npz: array 'x' has shape [16, 5], the input spec is ['batch', 8]" in err
    )
    assert not (tmp_path / "repo").exists()
    np.savez(tmp_path / "calib.npz", y=np.zeros((16, 8), np.float32))
    code, _, err = run_cli("convert", str(recipe))
    assert code == 1 and "no array for input 'x'" in err


def test_validation_data_drives_the_gate(tmp_path: Path) -> None:
    np.savez(tmp_path / "val.npz", x=np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32))
    recipe = tiny_recipe(tmp_path, targets=["onnx"], validation={"data": "val.npz"})
    report = convert([recipe])
    assert report.recipes[0].targets[0].accuracy["samples"] == 10


def test_recipe_not_found_and_not_yaml(tmp_path: Path) -> None:
    code, _, err = run_cli("convert", str(tmp_path / "missing.yaml"))
    assert code == 1 and "missing.yaml: recipe not found" in err
    (tmp_path / "bad.yaml").write_text("source: [unclosed\n")
    code, _, err = run_cli("convert", str(tmp_path / "bad.yaml"))
    assert code == 1 and "bad.yaml: malformed YAML: line" in err


def test_dynamic_dim_check_catches_a_static_batch(tmp_path: Path) -> None:
    """The silent failure the check exists for: a graph traced without dynamic axes."""
    import torch

    m = torch.nn.Linear(8, 4)
    path = tmp_path / "static.onnx"
    torch.onnx.export(m, (torch.zeros(2, 8),), str(path), input_names=["x"], dynamo=False)
    spec = TensorSpec(name="x", shape=["batch", 8])
    problems = check_dynamic_dims(onnx.load(str(path)), [spec], "torchscript exporter")
    assert problems == ["torchscript exporter: input 'x' dim 0 (batch) exported as static 2"]


def test_onnx_source_with_shape_inference(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "m.onnx"
    torch.onnx.export(
        torch.nn.Linear(8, 4),
        (torch.zeros(2, 8),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "source": {"kind": "onnx", "path": "m.onnx"},
                "targets": ["onnx", "onnx-fp16"],
                "triton": {"max_batch_size": 8},
                "destination": {"repository": "repo", "model": "lin"},
                "speed": {"iterations": 3, "budget_s": 0.1},
            }
        )
    )
    report = convert([recipe])
    assert report.written
    cfg = (tmp_path / "repo" / "lin-fp16" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cfg and "TYPE_FP32" in cfg  # fp16 keeps fp32 I/O


def test_tensorrt_target_without_a_gpu_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, targets=["onnx", "tensorrt-fp16"])
    ok, _ = gpu_available()
    code, _, err = run_cli("convert", str(recipe))
    if ok:
        # On a GPU machine the target builds (or says TensorRT is not installed): never a traceback.
        assert code == 0 or "tensorrt-fp16" in err
        return
    assert code == 1 and err.count("\n") == 1
    assert (
        "tiny-trt-fp16 (tensorrt-fp16): failed: tiny-trt-fp16: target tensorrt-fp16: needs an NVIDIA GPU"
        in err
    )
    assert not (tmp_path / "repo").exists()


@pytest.mark.gpu
def test_tensorrt_fp16_plan_builds_and_passes_the_gate(tmp_path: Path) -> None:
    ok, why = gpu_available()
    if not ok:
        pytest.skip("no NVIDIA GPU")
    recipe = tiny_recipe(tmp_path, targets=["tensorrt-fp16"])
    report = convert([recipe])
    t = report.recipes[0].targets[0]
    assert t.status == "written", t.reason
    man = ModelManifest.load(tmp_path / "repo" / "tiny-trt-fp16" / MANIFEST_NAME)
    build = man.versions[1].metadata["build"]
    assert build["tensorrt"] and build["compute_capability"]
    assert "cc_model_filenames" in (tmp_path / "repo" / "tiny-trt-fp16" / "config.pbtxt").read_text()


def test_convert_requires_a_recipe() -> None:
    with pytest.raises(ConversionError, match="no recipe given"):
        convert([])


UNSUPPORTED = textwrap.dedent(
    """\
    import torch

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real

    def build():
        return M()
    """
)


def test_unsupported_op_fails_both_exporters_with_one_line_and_clean_json_stdout(tmp_path: Path) -> None:
    """Run as a user does (a subprocess): the exporters' own dumps must not reach stdout."""
    import subprocess
    import sys

    (tmp_path / "eig.py").write_text(UNSUPPORTED)
    recipe = tiny_recipe(
        tmp_path,
        source={
            "kind": "torch",
            "factory": "eig:build",
            "outputs": ["y"],
            "inputs": [{"name": "x", "shape": ["batch", 4, 4]}],
        },
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tritonops", "convert", str(recipe), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "export failed: dynamo exporter:" in proc.stderr and "linalg_eig" in proc.stderr
    assert "torchscript exporter:" in proc.stderr
    assert not (tmp_path / "repo").exists()
