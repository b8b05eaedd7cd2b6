"""`repo validate` rejects each bad case with its own message, naming the path (and line)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.repo.conftest import make_onnx_model, make_python_model, python_config
from tritonops.cli import app
from tritonops.fileio import sha256_file
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest, write_index
from tritonops.repo.repository import add_version
from tritonops.repo.validate import Problem, validate_repository

GOOD = """backend: "python"
max_batch_size: 0
version_policy { specific { versions: [ 1 ] } }
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    add_version(root, "m", make_python_model(tmp_path / "src"), config=python_config(tmp_path / "c.pbtxt"))
    assert validate_repository(root) == []
    return root


def set_config(root: Path, text: str, model: str = "m") -> None:
    """Rewrite config.pbtxt as tritonops would (manifest + index updated), so only the config is at fault."""
    p = root / model / "config.pbtxt"
    p.write_text(text)
    man = ModelManifest.load(root / model / MANIFEST_NAME)
    man.config_sha256 = sha256_file(p)
    man.save(root / model / MANIFEST_NAME)
    write_index(root)


CONFIG_CASES: list[tuple[str, str, str, int | None]] = [
    (
        "malformed",
        GOOD.replace("dims: [ 4 ] } ]\noutput", "dims: [ 4 } ]\noutput"),
        "invalid config.pbtxt",
        4,
    ),
    ("unknown field", GOOD + "max_batch_sise: 2\n", 'no field named "max_batch_sise"', 6),
    ("missing model file", GOOD + 'default_model_filename: "other.py"\n', "version 1 has no other.py", 6),
    (
        "duplicate input",
        GOOD.replace("output [", 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput ['),
        "input 'INPUT0': duplicate input name",
        5,
    ),
    (
        "zero dim",
        GOOD.replace("dims: [ 4 ] } ]\noutput", "dims: [ 0 ] } ]\noutput"),
        "input 'INPUT0'.dims: 0 is invalid",
        4,
    ),
    (
        "no data type",
        GOOD.replace("data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput", "dims: [ 4 ] } ]\noutput"),
        "input 'INPUT0'.data_type: missing",
        4,
    ),
    (
        "empty dims",
        GOOD.replace("dims: [ 4 ] } ]\noutput", "dims: [ ] } ]\noutput"),
        "input 'INPUT0'.dims: empty",
        4,
    ),
    (
        "dynamic batching without batching",
        GOOD + "dynamic_batching { }\n",
        "dynamic_batching: set but max_batch_size is 0",
        6,
    ),
    (
        "preferred batch too big",
        GOOD.replace("max_batch_size: 0", "max_batch_size: 4")
        + "dynamic_batching { preferred_batch_size: [ 8 ] }\n",
        "dynamic_batching.preferred_batch_size: 8 is outside",
        6,
    ),
    (
        "cpu group with gpus",
        GOOD + "instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]\n",
        "instance_group[0].gpus: set for KIND_CPU",
        6,
    ),
    (
        "negative max_batch_size",
        GOOD.replace("max_batch_size: 0", "max_batch_size: -2"),
        "max_batch_size: -2 is negative",
        2,
    ),
    (
        "no version policy",
        GOOD.replace("version_policy { specific { versions: [ 1 ] } }\n", ""),
        "version_policy: not set",
        None,
    ),
    (
        "policy names a missing version",
        GOOD.replace("versions: [ 1 ]", "versions: [ 1, 7 ]"),
        "version_policy.specific.versions: version 7 has no folder",
        3,
    ),
    (
        "unknown platform",
        GOOD.replace('backend: "python"', 'platform: "onnx_runtime"'),
        "platform: unknown 'onnx_runtime'",
        1,
    ),
    (
        "platform/backend mismatch",
        'platform: "tensorrt_plan"\n' + GOOD,
        "backend: 'python' does not match platform 'tensorrt_plan'",
        2,
    ),
    (
        "name differs from folder",
        'name: "other"\n' + GOOD,
        "name: 'other' differs from the model folder 'm'",
        1,
    ),
]


@pytest.mark.parametrize("text,message,line", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_precise_problem(repo: Path, text: str, message: str, line: int | None) -> None:
    set_config(repo, text)
    problems = validate_repository(repo)
    assert len(problems) == 1, problems
    p = problems[0]
    assert message in p.message
    assert p.path == str(repo / "m" / "config.pbtxt")
    assert p.line == line


def test_ensemble_step_naming_a_missing_model(repo: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "e.pbtxt"
    cfg.write_text("""platform: "ensemble"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [ { model_name: "m" model_version: -1 input_map { key: "INPUT0" value: "INPUT0" }
  output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
""")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "README").write_text("x")
    add_version(repo, "ens", tmp_path / "e", config=cfg)
    assert validate_repository(repo) == []
    written = (repo / "ens" / "config.pbtxt").read_text()
    set_config(repo, written.replace('model_name: "m"', 'model_name: "gone"'), model="ens")
    problems = validate_repository(repo)
    assert len(problems) == 1, problems
    p = problems[0]
    assert p.path == str(repo / "ens" / "config.pbtxt")
    assert (
        p.line is not None
        and 'model_name: "gone"' in written.replace('"m"', '"gone"').splitlines()[p.line - 1]
    )
    assert "ensemble_scheduling.step[0].model_name: model 'gone' is not in the repository" in p.message


def _only(problems: list[Problem], needle: str) -> Problem:
    hits = [p for p in problems if needle in p.message]
    assert len(hits) == 1, problems
    return hits[0]


TREE_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "non-numeric version folder",
        lambda r: _mkdir_with_file(r / "m" / "v2"),
        "version folder 'v2' is not a positive",
    ),
    (
        "zero-prefixed version folder",
        lambda r: _mkdir_with_file(r / "m" / "01"),
        "version folder '01' starts with 0",
    ),
    ("empty version", lambda r: _mkdir(r / "m" / "2"), "version 2 is empty"),
    (
        "symlink outside",
        lambda r: _symlink(r / "m" / "1" / "data.bin", "/etc/hostname"),
        "symlink points outside the repository",
    ),
    (
        "object key",
        lambda r: _write(r / "m" / "labels v1.txt", b"a"),
        "has characters outside [0-9A-Za-z._/-]",
    ),
    (
        "bytes changed",
        lambda r: _write(r / "m" / "1" / "model.py", b"# changed\n", append=True),
        "manifest mismatch: bytes changed under existing version 1",
    ),
    (
        "file added",
        lambda r: _write(r / "m" / "1" / "extra.txt", b"x"),
        "manifest mismatch: file added under existing version 1",
    ),
    ("file removed", lambda r: _unlink(r / "m" / "1" / "model.py"), "manifest mismatch: file removed"),
    ("version not in manifest", lambda r: _mkdir_with_file(r / "m" / "5"), "version 5: not in the manifest"),
    (
        "config edited by hand",
        lambda r: _write(r / "m" / "config.pbtxt", b"\n", append=True),
        "config.pbtxt changed since the manifest was written",
    ),
    ("manifest missing", lambda r: _unlink(r / "m" / MANIFEST_NAME), "manifest missing"),
    (
        "index out of date",
        lambda r: _write(r / "tritonops-index.json", b'{"format_version": 1, "models": {}}'),
        "the index is out of date with the manifests of: m",
    ),
]


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _mkdir_with_file(p: Path) -> Path:
    p.mkdir()
    (p / "model.py").write_text("x = 1\n")
    return p


def _symlink(p: Path, target: str) -> Path:
    os.symlink(target, p)
    return p


def _write(p: Path, data: bytes, append: bool = False) -> Path:
    with open(p, "ab" if append else "wb") as f:
        f.write(data)
    return p


def _unlink(p: Path) -> Path:
    p.unlink()
    return p


@pytest.mark.parametrize("mutate,message", [c[1:] for c in TREE_CASES], ids=[c[0] for c in TREE_CASES])
def test_bad_tree_is_reported_with_its_path(repo: Path, mutate: Callable[[Path], Path], message: str) -> None:
    path = mutate(repo)
    p = _only(validate_repository(repo), message)
    assert p.path == str(path), p


ONNX_CFG = """platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy { specific { versions: [ 1 ] } }
input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

ONNX_CASES = [
    ("name", ONNX_CFG.replace('"X"', '"x"'), "input 'x': not in the ONNX graph", 4),
    (
        "element type",
        ONNX_CFG.replace(
            "data_type: TYPE_FP32 dims: [ 3 ] } ]\noutput", "data_type: TYPE_FP16 dims: [ 3 ] } ]\noutput"
        ),
        "input 'X'.data_type: TYPE_FP16 but the ONNX graph has TYPE_FP32",
        4,
    ),
    (
        "rank: batch dim written into dims",
        ONNX_CFG.replace("dims: [ 3 ] } ]\noutput", "dims: [ -1, 3 ] } ]\noutput"),
        "input 'X'.dims: rank 3 (max_batch_size > 0 adds the batch dimension) but the ONNX graph has rank 2",
        4,
    ),
    (
        "static dim",
        ONNX_CFG.replace("dims: [ 3 ] } ]\n", "dims: [ 5 ] } ]\n", 2).replace(
            'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 5 ]',
            'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ]',
        ),
        "input 'X'.dims: dimension 1 is 5 but the ONNX graph has 3",
        4,
    ),
]


@pytest.mark.parametrize("text,message,line", [c[1:] for c in ONNX_CASES], ids=[c[0] for c in ONNX_CASES])
def test_config_not_matching_the_onnx_graph(tmp_path: Path, text: str, message: str, line: int) -> None:
    root = tmp_path / "repo"
    src = tmp_path / "src"
    make_onnx_model(src / "model.onnx")
    good = tmp_path / "good.pbtxt"
    good.write_text(ONNX_CFG)
    add_version(root, "o", src, config=good)
    assert validate_repository(root) == []
    set_config(root, text, model="o")
    p = _only(validate_repository(root), message)
    assert (p.path, p.line) == (str(root / "o" / "config.pbtxt"), line)


def test_batching_a_graph_whose_first_dim_is_fixed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_onnx_model(src / "model.onnx", batch=False)
    bad = tmp_path / "c.pbtxt"
    bad.write_text(ONNX_CFG)
    from tritonops.errors import RepositoryError

    with pytest.raises(
        RepositoryError, match="max_batch_size > 0 but the ONNX graph's first dimension is fixed at 2"
    ):
        add_version(tmp_path / "repo", "o", src, config=bad)
    assert not (tmp_path / "repo" / "o").exists()


def test_cli_validate_exit_codes_and_json(repo: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["repo", "validate", str(repo)])
    assert ok.exit_code == 0, ok.output
    shutil.copy(repo / "m" / "1" / "model.py", repo / "m" / "1" / "copy.py")
    (repo / "m" / "01").mkdir()
    res = runner.invoke(app, ["repo", "validate", "--repo", str(repo), "-o", "json"])
    assert res.exit_code == 1
    import json

    doc = json.loads(res.stdout)
    assert doc["format_version"] == 1 and doc["valid"] is False
    messages = [p["message"] for p in doc["problems"]]
    assert any("file added under existing version 1" in m for m in messages)
    assert any("'01' starts with 0" in m for m in messages)
    text = runner.invoke(app, ["repo", "validate", str(repo)])
    assert text.exit_code == 1
    assert f"{repo / 'm' / '01'}: version folder '01' starts with 0" in text.stdout
