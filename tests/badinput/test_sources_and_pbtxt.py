"""Bad `repo add NAME --from SRC [--config FILE]`: sources that are not plain files and folders, and
config.pbtxt files Triton would refuse. Each is one line naming the path (and the field), and the
repository is byte-for-byte unchanged (the source tree too).

Categories: `--from` sources (links, FIFO, socket, devices, names, emptiness), config.pbtxt
(syntax, encoding, fields, I/O, batching, instance groups, version policy, ensembles).
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.badinput.harness import assert_refused, invoke, tree_hash
from tests.repo.conftest import make_python_model, python_config


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding model `m` version 1 (so a failed add must leave a real tree as it was)."""
    root = tmp_path / "repo"
    src = make_python_model(tmp_path / "v1")
    res = invoke(["repo", "add", "m", "--from", str(src), "--config", str(python_config(tmp_path / "c.pbtxt")),
                  "--repo", str(root)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root


def _link_out(src: Path) -> str:
    secret = src.parent / "secret"
    secret.write_text("root:x:0:0")
    os.symlink(secret, src / "weights.bin")
    return "weights.bin: symlink"


def _link_in(src: Path) -> str:
    os.symlink("model.py", src / "alias.py")
    return "alias.py: symlink"


def _link_abs_etc(src: Path) -> str:
    os.symlink("/etc/passwd", src / "passwd")
    return "passwd: symlink (to /etc/passwd)"


def _link_dir_out(src: Path) -> str:
    os.symlink("/etc", src / "etc")
    return "etc: symlink"


def _link_dir_loop(src: Path) -> str:
    os.symlink(".", src / "loop")
    return "loop: symlink"


def _link_broken(src: Path) -> str:
    os.symlink(src / "gone", src / "w.bin")
    return "w.bin: symlink"


def _link_nested(src: Path) -> str:
    (src / "sub").mkdir()
    os.symlink("/etc/hostname", src / "sub" / "h")
    return "sub/h: symlink"


def _fifo(src: Path) -> str:
    os.mkfifo(src / "pipe")
    return "pipe: named pipe (FIFO)"


def _fifo_nested(src: Path) -> str:
    (src / "a" / "b").mkdir(parents=True)
    os.mkfifo(src / "a" / "b" / "p")
    return "a/b/p: named pipe"


def _socket(src: Path) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(src / "sock"))
    s.close()
    return "sock: socket"


def _chardev(src: Path) -> str:
    os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return "null: character device"


def _blockdev(src: Path) -> str:
    os.mknod(src / "loop0", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    return "loop0: block device"


def _space_name(src: Path) -> str:
    (src / "my weights.bin").write_bytes(b"x")
    return "my weights.bin: file name has characters"


def _unicode_name(src: Path) -> str:
    (src / "poids-é.bin").write_bytes(b"x")
    return "file name has characters"


def _no_model_file(src: Path) -> str:
    (src / "model.py").rename(src / "main.py")
    return "has no model.py"


SOURCES: list[tuple[str, Callable[[Path], str]]] = [
    ("link-out", _link_out), ("link-in", _link_in), ("link-etc", _link_abs_etc), ("link-dir-out", _link_dir_out),
    ("link-dir-loop", _link_dir_loop), ("link-broken", _link_broken), ("link-nested", _link_nested),
    ("fifo", _fifo), ("fifo-nested", _fifo_nested), ("socket", _socket), ("chardev", _chardev),
    ("blockdev", _blockdev), ("space-name", _space_name), ("unicode-name", _unicode_name),
    ("no-model-file", _no_model_file),
]  # fmt: skip


@pytest.mark.parametrize("make", [c[1] for c in SOURCES], ids=[c[0] for c in SOURCES])
def test_bad_from_source(repo: Path, tmp_path: Path, make: Callable[[Path], str]) -> None:
    src = make_python_model(tmp_path / "src")
    culprit = make(src)
    before = tree_hash(repo, src)
    res = invoke(["repo", "add", "m", "--from", str(src), "--repo", str(repo)])
    assert_refused(res, [culprit], code=1)
    assert tree_hash(repo, src) == before


@pytest.mark.parametrize(
    ("make", "culprit"),
    [
        (lambda t: t / "missing", "no such file or folder"),
        (lambda t: (t / "empty").mkdir() or t / "empty", "folder holds no files"),
        (lambda t: os.mkfifo(t / "p") or t / "p", "named pipe (FIFO) refused"),
        (lambda t: os.symlink(t / "gone", t / "s") or t / "s", "no such file or folder"),
    ],
    ids=["missing", "empty-dir", "fifo-itself", "broken-link-itself"],
)
def test_bad_from_argument(repo: Path, tmp_path: Path, make: Callable[[Path], Path], culprit: str) -> None:
    src = make(tmp_path)
    before = tree_hash(repo)
    assert_refused(invoke(["repo", "add", "m", "--from", str(src), "--repo", str(repo)]), [str(src), culprit], code=1)
    assert tree_hash(repo) == before


IO = 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
PBTXT: list[tuple[str, str, str]] = [
    ("syntax", 'backend: "python"\ninput [ {\n', "invalid config.pbtxt"),
    ("unknown-field", 'backend: "python"\ngpu_count: 2\n' + IO, "gpu_count"),
    ("wrong-type", 'backend: "python"\nmax_batch_size: "lots"\n' + IO, "max_batch_size"),
    ("no-backend", IO, "platform/backend: neither is set"),
    ("backend-platform-clash", 'backend: "python"\nplatform: "onnxruntime_onnx"\n' + IO, "does not match platform"),
    ("mbs-negative", 'backend: "python"\nmax_batch_size: -1\n' + IO, "max_batch_size: -1 is negative"),
    ("empty-input-name", 'backend: "python"\n' + IO.replace('"INPUT0"', '""'), ".name: empty"),
    ("dup-input", 'backend: "python"\n' + IO.replace("] } ]\noutput", '] }, { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput', 1), "duplicate input name"),
    ("no-data-type", 'backend: "python"\n' + IO.replace("data_type: TYPE_FP32 ", "", 1), "data_type: missing"),
    ("bad-enum", 'backend: "python"\n' + IO.replace("TYPE_FP32", "TYPE_FP99", 1), "invalid config.pbtxt"),
    ("dims-zero", 'backend: "python"\n' + IO.replace("dims: [ 4 ]", "dims: [ 0 ]", 1), "dims: 0 is invalid"),
    ("dims-neg2", 'backend: "python"\n' + IO.replace("dims: [ 4 ]", "dims: [ -2 ]", 1), "dims: -2 is invalid"),
    ("reshape-bad", 'backend: "python"\n' + IO.replace("dims: [ 4 ] }", "dims: [ 4 ] reshape: { shape: [ 0 ] } }", 1), "reshape.shape: 0 is invalid"),
    ("instance-count-neg", 'backend: "python"\n' + IO + "instance_group [ { kind: KIND_CPU count: -1 } ]\n", "count: -1 is negative"),
    ("instance-gpus-neg", 'backend: "python"\n' + IO + "instance_group [ { kind: KIND_GPU gpus: [ -1 ] } ]\n", "negative GPU id"),
    ("latest-zero", 'backend: "python"\n' + IO + "version_policy: { latest: { num_versions: 0 } }\n", "num_versions: 0"),
    ("specific-empty", 'backend: "python"\n' + IO + "version_policy: { specific: { } }\n", "specific.versions: empty"),
    ("specific-zero", 'backend: "python"\n' + IO + "version_policy: { specific: { versions: [ 0 ] } }\n", "versions: 0 is not a version number"),
    ("dyn-and-seq", 'backend: "python"\nmax_batch_size: 4\n' + IO + "dynamic_batching { }\nsequence_batching { }\n", "sequence_batching"),
    ("ensemble-no-steps", 'platform: "ensemble"\n' + IO + "ensemble_scheduling { }\n", "ensemble"),
    ("ensemble-self", 'platform: "ensemble"\n' + IO + 'ensemble_scheduling { step [ { model_name: "m" model_version: -1 input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }\n', "refers to itself"),
    ("ensemble-unknown-model", 'platform: "ensemble"\n' + IO + 'ensemble_scheduling { step [ { model_name: "ghost" model_version: -1 input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }\n', "ghost"),
    ("name-clash", 'name: "other"\nbackend: "python"\n' + IO, "config says 'other'"),
    ("default-filename-missing", 'backend: "python"\ndefault_model_filename: "main.py"\n' + IO, "main.py"),
]


@pytest.mark.parametrize(("text", "culprit"), [c[1:] for c in PBTXT], ids=[c[0] for c in PBTXT])
def test_bad_config_pbtxt(repo: Path, tmp_path: Path, text: str, culprit: str) -> None:
    src = make_python_model(tmp_path / "src")
    cfg = tmp_path / "bad.pbtxt"
    cfg.write_text(text)
    before = tree_hash(repo)
    res = invoke(["repo", "add", "m", "--from", str(src), "--config", str(cfg), "--repo", str(repo)])
    assert_refused(res, [culprit], code=1)
    assert tree_hash(repo) == before


@pytest.mark.parametrize(
    "raw", [b"backend: \"caf\xe9\"\n", b"\xff\xfe\x00\x00", b"\x00\x00\x00"], ids=["latin1", "binary", "nul"]
)
def test_config_pbtxt_not_text(repo: Path, tmp_path: Path, raw: bytes) -> None:
    src = make_python_model(tmp_path / "src")
    cfg = tmp_path / "bad.pbtxt"
    cfg.write_bytes(raw)
    before = tree_hash(repo)
    res = invoke(["repo", "add", "m", "--from", str(src), "--config", str(cfg), "--repo", str(repo)])
    assert_refused(res, [str(cfg)], code=1)
    assert tree_hash(repo) == before
