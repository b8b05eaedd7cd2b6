"""`dev up` puts a real Envoy in front of each region's Tritons; `dev status` shows where it listens,
and a model loaded on the region's Triton answers through it over HTTP and gRPC."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tests.conftest import REGIONS, Stack
from tritonops.cli import app
from tritonops.dev.smoke import publish_smoke_model


def test_status_shows_each_regions_envoy_and_a_model_answers_through_it(dev_stack: Stack, unique) -> None:
    runner = CliRunner()
    st = runner.invoke(app, ["dev", "status", "--state-dir", str(dev_stack.state_dir), "-o", "json"])
    assert st.exit_code == 0, st.output
    parts = {p["name"]: p for p in json.loads(st.stdout)["parts"]}
    region = REGIONS[0]
    envoy = parts[f"envoy-{region}"]
    assert envoy["ready"] and envoy["url"].startswith("http://127.0.0.1:")
    rcfg = dev_stack.config.region(region)
    assert rcfg.route is not None and envoy["url"] == f"http://{rcfg.route.listen}"

    model = unique("viaenvoy")
    publish_smoke_model(rcfg, model)
    httpclient.InferenceServerClient(rcfg.servers[0].http_url.removeprefix("http://")).load_model(model)
    res = runner.invoke(app, ["--config", str(dev_stack.config_path), "route", "--region", region, "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["served"][rcfg.servers[0].name] == {model: [1]}

    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    h = httpclient.InferenceServerClient(rcfg.route.listen)
    i = httpclient.InferInput("X", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    assert h.infer(model, [i]).as_numpy("Y")[0].tolist() == [3.0, 5.0, 7.0, 9.0]
    g = grpcclient.InferenceServerClient(rcfg.route.listen)
    gi = grpcclient.InferInput("X", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    out = g.infer(model, [gi], headers={"tritonops-model": model}).as_numpy("Y")[0].tolist()
    assert out == [3.0, 5.0, 7.0, 9.0]
    httpclient.InferenceServerClient(rcfg.servers[0].http_url.removeprefix("http://")).unload_model(model)
