"""config.pbtxt through Triton's schema: errors name file and line; writing keeps zero values that matter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.errors import RepositoryError
from tritonops.repo.model_config import config_to_text, parse_config_text, read_config


def test_max_batch_size_zero_is_written_explicitly() -> None:
    cfg = mc.ModelConfig(name="m", backend="python", max_batch_size=0)
    text = config_to_text(cfg)
    assert "max_batch_size: 0" in text.splitlines()
    assert parse_config_text(text, "x") == cfg


def test_malformed_text_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "config.pbtxt"
    p.write_text('name: "m"\nbackend: "python"\ninput [ { name: "X" dims: [ 4 }\n')
    with pytest.raises(RepositoryError, match=rf"^{p}:3: invalid config.pbtxt: "):
        read_config(p)


def test_unknown_field_is_an_error_not_ignored(tmp_path: Path) -> None:
    p = tmp_path / "config.pbtxt"
    p.write_text('name: "m"\nmax_batch_sise: 4\n')
    with pytest.raises(
        RepositoryError, match=r":2: invalid config.pbtxt: .*no field named \"max_batch_sise\""
    ):
        read_config(p)


def test_missing_file() -> None:
    with pytest.raises(RepositoryError, match="config.pbtxt missing"):
        read_config(Path("/nonexistent/config.pbtxt"))


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC_0123456789", min_size=1, max_size=12)
dtypes = st.sampled_from([v for v in mc.DataType.values() if v != mc.TYPE_INVALID])
dims = st.lists(st.one_of(st.just(-1), st.integers(1, 4096)), min_size=1, max_size=5)


@st.composite
def io_lists(draw: st.DrawFn, cls: type) -> list:
    out = []
    for name in draw(st.lists(names, min_size=0, max_size=4, unique=True)):
        io = cls(name=name, data_type=draw(dtypes), dims=draw(dims))
        if draw(st.booleans()):
            io.reshape.shape.extend(draw(st.lists(st.integers(1, 64), max_size=3)))
        out.append(io)
    return out


@st.composite
def configs(draw: st.DrawFn) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=draw(names), max_batch_size=draw(st.integers(0, 1024)))
    if draw(st.booleans()):
        cfg.platform = draw(st.sampled_from(["onnxruntime_onnx", "tensorrt_plan", "ensemble"]))
    else:
        cfg.backend = draw(st.sampled_from(["python", "onnxruntime", "tensorrt"]))
    cfg.input.extend(draw(io_lists(mc.ModelInput)))
    cfg.output.extend(draw(io_lists(mc.ModelOutput)))
    policy = draw(st.sampled_from(["specific", "latest", "all", None]))
    if policy == "specific":
        cfg.version_policy.specific.versions.extend(
            draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=3))
        )
    elif policy == "latest":
        cfg.version_policy.latest.num_versions = draw(st.integers(1, 5))
    elif policy == "all":
        cfg.version_policy.all.SetInParent()
    for _ in range(draw(st.integers(0, 2))):
        g = cfg.instance_group.add(
            count=draw(st.integers(0, 8)),
            kind=draw(st.sampled_from([mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU])),
        )
        if g.kind == mc.ModelInstanceGroup.KIND_GPU:
            g.gpus.extend(draw(st.lists(st.integers(0, 7), max_size=2)))
    if draw(st.booleans()):
        cfg.dynamic_batching.SetInParent()
        cfg.dynamic_batching.preferred_batch_size.extend(draw(st.lists(st.integers(1, 64), max_size=3)))
        cfg.dynamic_batching.max_queue_delay_microseconds = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        cfg.default_model_filename = draw(names) + ".bin"
    if draw(st.booleans()):
        cfg.parameters["key"].string_value = draw(st.text(max_size=20))
    return cfg


@settings(max_examples=200, deadline=None)
@given(configs())
def test_round_trip_parse_write_parse(cfg: mc.ModelConfig) -> None:
    text = config_to_text(cfg)
    again = parse_config_text(text, "<generated>")
    assert again == cfg
    assert config_to_text(again) == text
    # The batching decision is always visible to a person reading the file.
    assert any(line.startswith("max_batch_size: ") for line in text.splitlines())


def test_the_schema_loads_without_the_grpc_client_and_is_shared_with_it() -> None:
    # Parsing a config must not pay for grpc and numpy (tritonclient.grpc's __init__); importing
    # the gRPC client afterwards must reuse the schema module, not register it a second time.
    probe = (
        "import sys\n"
        "from tritonops.repo.model_config import model_config_pb2, parse_config_text\n"
        "cfg = parse_config_text('name: \"m\" max_batch_size: 4', 'x')\n"
        "assert not {'grpc', 'numpy', 'tritonclient.grpc'} & set(sys.modules), sorted(sys.modules)\n"
        "import tritonclient.grpc as g\n"
        "from tritonclient.grpc import service_pb2\n"
        "assert g.model_config_pb2 is model_config_pb2\n"
        "assert isinstance(cfg, g.model_config_pb2.ModelConfig)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
