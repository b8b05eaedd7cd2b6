"""Repositories built by `repo add` are loaded and served by the real Triton of the local stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import Stack
from tests.repo.conftest import make_python_model, python_config, serve_and_infer
from tritonops.repo.model_config import read_config
from tritonops.repo.repository import add_version
from tritonops.repo.validate import validate_repository


def test_python_model_built_by_add_loads_and_answers(
    dev_stack: Stack, unique, repo_root: Path, tmp_path: Path
) -> None:
    model = unique("py")
    add_version(
        repo_root, model, make_python_model(tmp_path / "src", 3.0), config=python_config(tmp_path / "c.pbtxt")
    )
    assert validate_repository(repo_root) == []
    x = np.arange(4, dtype=np.float32)
    y, index = serve_and_infer(dev_stack, repo_root, model, x)
    assert np.allclose(y, x * 3.0)
    assert [(r["version"], r["state"]) for r in index] == [("1", "READY")]


def test_only_the_version_in_the_explicit_policy_is_served(
    dev_stack: Stack, unique, repo_root: Path, tmp_path: Path
) -> None:
    """v2 added with the config kept: the policy moves to v2, so Triton serves v2's bytes, never v1's."""
    model = unique("py2")
    add_version(
        repo_root, model, make_python_model(tmp_path / "a", 2.0), config=python_config(tmp_path / "c.pbtxt")
    )
    add_version(repo_root, model, make_python_model(tmp_path / "b", 5.0))
    assert list(read_config(repo_root / model / "config.pbtxt").version_policy.specific.versions) == [2]
    assert validate_repository(repo_root) == []
    x = np.ones(4, dtype=np.float32)
    y, index = serve_and_infer(dev_stack, repo_root, model, x, region="us-east-1")
    assert np.allclose(y, 5.0)
    ready = sorted(r["version"] for r in index if r.get("state") == "READY")
    assert ready == ["2"]


def test_batched_model_with_dynamic_batching_loads(
    dev_stack: Stack, unique, repo_root: Path, tmp_path: Path
) -> None:
    model = unique("pyb")
    cfg = python_config(
        tmp_path / "c.pbtxt",
        mbs=8,
        extra="dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100 }\n",
    )
    add_version(
        repo_root,
        model,
        make_python_model(tmp_path / "src", 4.0, extra={"assets/table.bin": b"\x00" * 10}),
        config=cfg,
    )
    assert validate_repository(repo_root) == []
    x = np.ones((3, 4), dtype=np.float32)
    y, _ = serve_and_infer(dev_stack, repo_root, model, x)
    assert y.shape == (3, 4) and np.allclose(y, 4.0)


def test_ensemble_of_two_python_models_loads(
    dev_stack: Stack, unique, repo_root: Path, tmp_path: Path
) -> None:
    a, b, ens = unique("ea"), unique("eb"), unique("ens")
    cfg = python_config(tmp_path / "c.pbtxt")
    add_version(repo_root, a, make_python_model(tmp_path / "a", 2.0), config=cfg)
    add_version(repo_root, b, make_python_model(tmp_path / "b", 10.0), config=cfg)
    ens_cfg = tmp_path / "e.pbtxt"
    ens_cfg.write_text(f"""
platform: "ensemble"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
ensemble_scheduling {{
  step [
    {{ model_name: "{a}" model_version: -1 input_map {{ key: "INPUT0" value: "INPUT0" }}
       output_map {{ key: "OUTPUT0" value: "mid" }} }},
    {{ model_name: "{b}" model_version: -1 input_map {{ key: "INPUT0" value: "mid" }}
       output_map {{ key: "OUTPUT0" value: "OUTPUT0" }} }}
  ]
}}
""")
    # An ensemble's version folder holds no files; it still needs one, so it is added from an empty marker.
    (tmp_path / "ens-src").mkdir()
    (tmp_path / "ens-src" / "README").write_text("ensemble: no model file\n")
    add_version(repo_root, ens, tmp_path / "ens-src", config=ens_cfg)
    assert validate_repository(repo_root) == []
    x = np.ones(4, dtype=np.float32)
    y, _ = serve_and_infer(dev_stack, repo_root, ens, x, also=(a, b))
    assert np.allclose(y, 20.0)
