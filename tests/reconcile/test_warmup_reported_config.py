"""Reconcile's warmup is built from the config Triton reports for the loaded model, so a model whose
config the backend completes (python ``auto_complete_config``, config.pbtxt without inputs/outputs)
passes the health gate. Real Triton, real bucket, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.reconcile.test_e2e import cli, ready
from tritonops.repo.repository import add_version
from tritonops.triton.client import ControlClient

EU = "eu-west-1"
pytestmark = pytest.mark.slow

# No input or output here: the backend declares them (Triton completes the config on load).
BARE_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

AUTO_COMPLETE_PY = b'''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(cfg):
        cfg.add_input({"name": "INPUT_A", "data_type": "TYPE_FP32", "dims": [3]})
        cfg.add_output({"name": "SUM", "data_type": "TYPE_FP32", "dims": [1]})
        return cfg

    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT_A").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", a.sum(axis=1, keepdims=True))]))
        return out
'''


def test_warmup_uses_the_config_triton_completed(rec_regions, unique, tmp_path: Path) -> None:
    model = unique("auto")
    rr = rec_regions({})
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.py").write_bytes(AUTO_COMPLETE_PY)
    conf = tmp_path / "config.pbtxt"
    conf.write_text(BARE_CONFIG.format(name=model))
    add_version(rr.config.repository_path, model, src / "model.py", config=conf)
    assert cli(rr, "sync", "-r", EU).exit_code == 0

    res = cli(rr, "reconcile", "-r", EU, "-o", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(r["kind"], r["model"], r["result"], r["error"]) for r in doc["results"]] == [
        ("load", model, "ok", "")
    ]
    assert ready(rr.servers[EU]) == {model: [1]}

    # What the gate read: Triton's completed config, over HTTP and gRPC alike.
    server = rr.servers[EU]
    for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
        reported = ControlClient.connect(url, protocol).model_config(model, 1)
        assert [i["name"] for i in reported["input"]] == ["INPUT_A"], (protocol, reported)
        assert [int(d) for d in reported["input"][0]["dims"]] == [3]
        got = ControlClient.connect(url, protocol).infer(
            model, [("INPUT_A", "FP32", np.array([[1.0, 2.0, 3.0]], dtype=np.float32))], version=1
        )
        assert got["SUM"].tolist() == [[6.0]]
