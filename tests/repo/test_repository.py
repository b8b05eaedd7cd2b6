"""add_version: immutable versions, explicit version policy, nothing written on failure, streamed hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from tests.repo.conftest import make_onnx_model, make_python_model, python_config
from tritonops.cli import app
from tritonops.errors import RepositoryError
from tritonops.repo.inventory import diff_repositories, list_repository
from tritonops.repo.manifest import INDEX_NAME, MANIFEST_NAME, ModelManifest, RepoIndex
from tritonops.repo.model_config import read_config
from tritonops.repo.repository import (
    add_version,
    copy_hashed,
    prune_repository,
    set_version_metadata,
)
from tritonops.repo.validate import validate_repository


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file (and folder) under root with its bytes, lock file excluded."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name == ".tritonops-lock":
            continue
        out[p.relative_to(root).as_posix()] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def test_versions_are_numbered_recorded_and_never_rewritten(repo_root: Path, tmp_path: Path) -> None:
    src = make_python_model(tmp_path / "src", 2.0, extra={"weights/w.bin": os.urandom(5000)})
    e1 = add_version(
        repo_root,
        "m",
        src,
        config=python_config(tmp_path / "c.pbtxt"),
        source={"recipe": "converters/m.yaml"},
        metadata={"note": "first"},
    )
    v1 = snapshot(repo_root / "m" / "1")
    make_python_model(src, 7.0)  # same folder, new bytes
    e2 = add_version(repo_root, "m", src)
    assert (e1.version, e2.version) == (1, 2)
    assert snapshot(repo_root / "m" / "1") == v1  # untouched
    man = ModelManifest.load(repo_root / "m" / MANIFEST_NAME)
    for n in (1, 2):
        for f in man.versions[n].files:
            data = (repo_root / "m" / str(n) / f.path).read_bytes()
            assert (f.size, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert sorted(f.path for f in man.versions[1].files) == ["model.py", "weights/w.bin"]
    assert man.versions[1].source == {"recipe": "converters/m.yaml"}
    assert man.versions[1].metadata == {"note": "first"}
    assert man.versions[1].digest != man.versions[2].digest
    cfg = read_config(repo_root / "m" / "config.pbtxt")
    assert list(cfg.version_policy.specific.versions) == [2]
    assert cfg.name == "m"
    idx = RepoIndex.loads((repo_root / INDEX_NAME).read_bytes())
    assert idx.models["m"]["digest"] == man.digest
    assert validate_repository(repo_root) == []


def test_a_chosen_version_policy_is_kept(repo_root: Path, tmp_path: Path) -> None:
    cfg = python_config(tmp_path / "c.pbtxt", extra="version_policy { latest { num_versions: 2 } }\n")
    add_version(repo_root, "m", make_python_model(tmp_path / "a"), config=cfg)
    add_version(repo_root, "m", make_python_model(tmp_path / "b", 3.0))
    policy = read_config(repo_root / "m" / "config.pbtxt").version_policy
    assert policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions == 2


@pytest.mark.parametrize(
    "case,message",
    [
        ("python without config", "a python model needs a config"),
        ("bad config", "dims: 0 is invalid"),
        ("config/model name clash", "name: config says 'other'"),
        ("bad file name", "file name has characters outside"),
        ("empty folder", "folder holds no files"),
        ("missing source", "no such file or folder"),
        ("missing model file", "has no model.py"),
        ("symlinked folder", "loop: symlink .* refused"),
        ("broken symlink", "w.bin: symlink .* refused"),
    ],
)
def test_nothing_is_written_when_add_fails(repo_root: Path, tmp_path: Path, case: str, message: str) -> None:
    add_version(
        repo_root, "m", make_python_model(tmp_path / "ok"), config=python_config(tmp_path / "c.pbtxt")
    )
    before = snapshot(repo_root)
    src = make_python_model(tmp_path / "src")
    cfg: Path | None = python_config(tmp_path / "c2.pbtxt")
    model = "m"
    if case == "python without config":
        model, cfg = "new", None
    elif case == "bad config":
        cfg.write_text(cfg.read_text().replace("dims: [ 4 ] } ]\noutput", "dims: [ 0 ] } ]\noutput"))
    elif case == "config/model name clash":
        cfg.write_text('name: "other"\n' + cfg.read_text())
    elif case == "bad file name":
        (src / "my weights.bin").write_bytes(b"x")
    elif case == "empty folder":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "missing source":
        src = tmp_path / "nope"
    elif case == "symlinked folder":
        os.symlink(src, src / "loop")
    elif case == "broken symlink":
        os.symlink(tmp_path / "gone", src / "w.bin")
    elif case == "missing model file":
        (src / "model.py").rename(src / "main.py")
    with pytest.raises(RepositoryError, match=message):
        add_version(repo_root, model, src, config=cfg)
    assert snapshot(repo_root) == before
    assert not [p for p in repo_root.iterdir() if p.name.startswith(".tritonops-staging")]


def test_symlinked_files_are_refused_not_followed(repo_root: Path, tmp_path: Path) -> None:
    # A link inside the source could point anywhere (/etc/shadow): refused, named, nothing copied.
    src = make_python_model(tmp_path / "src")
    (tmp_path / "secret").write_bytes(b"w" * 100)
    os.symlink(tmp_path / "secret", src / "weights.bin")
    with pytest.raises(RepositoryError, match=r"weights.bin: symlink \(to .*secret\) refused"):
        add_version(repo_root, "m", src, config=python_config(tmp_path / "c.pbtxt"))
    assert not (repo_root / "m").exists()


def test_refuses_a_model_folder_tritonops_did_not_create(repo_root: Path, tmp_path: Path) -> None:
    (repo_root / "hand" / "1").mkdir(parents=True)
    (repo_root / "hand" / "1" / "model.py").write_text("x")
    with pytest.raises(RepositoryError, match="not created by tritonops"):
        add_version(
            repo_root, "hand", make_python_model(tmp_path / "s"), config=python_config(tmp_path / "c.pbtxt")
        )


def test_onnx_config_is_generated_from_the_graph_and_matches_onnxruntime(
    repo_root: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    src = tmp_path / "src"
    make_onnx_model(src / "model.onnx")
    add_version(repo_root, "o", src)
    cfg = read_config(repo_root / "o" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 0
    sess = ort.InferenceSession(str(repo_root / "o" / "1" / "model.onnx"))
    assert [i.name for i in cfg.input] == [i.name for i in sess.get_inputs()]
    assert [o.name for o in cfg.output] == [o.name for o in sess.get_outputs()]
    assert list(cfg.input[0].dims) == [-1, 3] and cfg.input[0].data_type == mc.TYPE_FP32
    assert "max_batch_size: 0" in (repo_root / "o" / "config.pbtxt").read_text()
    y = sess.run(None, {"X": np.zeros((2, 3), np.float32)})[0]
    assert np.allclose(y, 1.0)
    assert validate_repository(repo_root) == []


def test_metadata_never_changes_digests(repo_root: Path, tmp_path: Path) -> None:
    add_version(repo_root, "m", make_python_model(tmp_path / "s"), config=python_config(tmp_path / "c.pbtxt"))
    index_before = (repo_root / INDEX_NAME).read_bytes()
    digest = ModelManifest.load(repo_root / "m" / MANIFEST_NAME).digest
    set_version_metadata(repo_root, "m", 1, "memory", {"cpu": {"bytes": 123}})
    man = ModelManifest.load(repo_root / "m" / MANIFEST_NAME)
    assert man.versions[1].metadata["memory"] == {"cpu": {"bytes": 123}}
    assert man.digest == digest
    assert (repo_root / INDEX_NAME).read_bytes() == index_before
    assert validate_repository(repo_root) == []
    with pytest.raises(RepositoryError, match="has no version 9"):
        set_version_metadata(repo_root, "m", 9, "k", 1)
    with pytest.raises(RepositoryError, match="not JSON-serialisable"):
        set_version_metadata(repo_root, "m", 1, "k", object())


def test_prune_keeps_newest_live_and_pinned(repo_root: Path, tmp_path: Path) -> None:
    cfg = python_config(tmp_path / "c.pbtxt")
    for i in range(5):
        add_version(
            repo_root, "m", make_python_model(tmp_path / f"s{i}", float(i)), config=cfg if i == 0 else None
        )
    set_version_metadata(repo_root, "m", 2, "pinned", True)
    assert [r["version"] for r in prune_repository(repo_root, 2, dry_run=True)] == [1, 3]
    assert sorted(p.name for p in (repo_root / "m").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    removed = prune_repository(repo_root, 2)
    assert [r["version"] for r in removed] == [1, 3]
    assert sorted(p.name for p in (repo_root / "m").iterdir() if p.name.isdigit()) == ["2", "4", "5"]
    assert validate_repository(repo_root) == []
    assert prune_repository(repo_root, 2) == []
    with pytest.raises(RepositoryError, match="--keep: 0"):
        prune_repository(repo_root, 0)


def test_copy_hashes_in_bounded_memory(tmp_path: Path) -> None:
    """Streamed: Python allocations stay near one chunk while a file 256x that size is copied and hashed."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        entry = copy_hashed(big, tmp_path / "out.bin", "big.bin", chunk_bytes=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry.size == 16 << 20
    assert entry.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert peak < 1 << 20, f"peak {peak} bytes while hashing 16 MiB in 64 KiB chunks"


def test_cli_add_list_diff_prune(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "r"
    cfg = python_config(tmp_path / "c.pbtxt")
    src = make_python_model(tmp_path / "s")
    res = runner.invoke(
        app, ["repo", "add", "m", "--from", str(src), "--config", str(cfg), "--repo", str(root), "-o", "json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["version"] == 1
    old = tmp_path / "old"
    import shutil

    shutil.copytree(root, old)
    (src / "model.py").write_text("# v2\n" + (src / "model.py").read_text())
    assert runner.invoke(app, ["repo", "add", "m", "--from", str(src), "--repo", str(root)]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["repo", "list", "--repo", str(root), "-o", "json"]).stdout)
    [m] = listed["models"]
    assert [v["version"] for v in m["versions"]] == [1, 2] and m["live_versions"] == [2]
    assert m == list_repository(root)["models"][0] and m["damaged"] is False
    d = json.loads(runner.invoke(app, ["repo", "diff", str(old), str(root), "-o", "json"]).stdout)
    assert d["models_changed"] == [
        {
            "model": "m",
            "config_changed": True,
            "versions_added": [2],
            "versions_removed": [],
            "versions_changed": [],
        }
    ]
    assert d == {"format_version": 1, **diff_repositories(old, root)}
    vd = json.loads(
        runner.invoke(app, ["repo", "diff", "m@1", "m@2", "--repo", str(root), "-o", "json"]).stdout
    )
    assert vd["files_changed"] == ["model.py"] and vd["files_added"] == []
    table = runner.invoke(app, ["repo", "diff", "m@1", "m@2", "--repo", str(root)])
    assert "model.py" in table.stdout
    pr = runner.invoke(app, ["repo", "prune", "--keep", "1", "--repo", str(root), "-o", "json"])
    assert pr.exit_code == 0 and [r["version"] for r in json.loads(pr.stdout)["removed"]] == [1]
    bad = runner.invoke(app, ["repo", "add", "m", "--from", str(tmp_path / "nope"), "--repo", str(root)])
    assert bad.exit_code == 1 and "no such file or folder" in bad.stderr and "Traceback" not in bad.output
