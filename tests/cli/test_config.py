"""A bad tritonops.yaml gets one line naming the file and key path, exit 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonops.cli import app
from tritonops.config import load_config, parse_config
from tritonops.errors import ConfigError

GOOD = """\
repository: model_repos/prod
regions:
  eu-west-1:
    bucket: s3://acme-models-eu/triton
    endpoint_url: https://s3.eu-west-1.amazonaws.com
    servers:
      - name: eu-gpu-0
        http_url: http://10.0.0.5:8000
  us-east-1:
    bucket: s3://acme-models-us/triton
    servers:
      - name: us-gpu-0
        grpc_url: 10.1.0.5:8001
models:
  resnet50:
    regions: [eu-west-1]
    placement: pinned
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tritonops.yaml"
    p.write_text(text)
    return p


def test_good_config_resolves_paths_and_rules(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.repository_path == tmp_path / "model_repos" / "prod"
    assert cfg.allowed_regions("resnet50") == ["eu-west-1"]
    assert cfg.allowed_regions("other") == ["eu-west-1", "us-east-1"]
    assert cfg.placement("resnet50").value == "pinned"
    assert cfg.placement("other").value == "on-demand"
    eu = cfg.region("eu-west-1")
    assert (eu.bucket_name, eu.prefix) == ("acme-models-eu", "triton")
    assert eu.triton_repository_url() == "s3://https://s3.eu-west-1.amazonaws.com/acme-models-eu/triton"
    assert cfg.region("us-east-1").triton_repository_url() == "s3://acme-models-us/triton"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("    bucket: s3://acme-models-us/triton\n", ""), "regions.us-east-1.bucket: required key is missing"),
        (GOOD.replace("s3://acme-models-eu/triton", "acme-models-eu"), "regions.eu-west-1.bucket: not an s3:// or file:// URL"),
        (GOOD.replace("regions: [eu-west-1]", "regions: [ap-south-1]"), "models.resnet50.regions[0]: unknown region 'ap-south-1'"),
        (GOOD.replace("placement: pinned", "placement: sometimes"), "models.resnet50.placement: Input should be 'pinned' or 'on-demand'"),
        (GOOD.replace("      - name: eu-gpu-0\n", "      - name: [1, 2]\n"), "regions.eu-west-1.servers[0].name: Input should be a valid string"),
        (GOOD + "colour: blue\n", "colour: unknown key"),
        (GOOD.replace("    servers:\n      - name: us-gpu-0\n        grpc_url: 10.1.0.5:8001\n", "    servers:\n      - name: us-gpu-0\n"),
         "regions.us-east-1.servers[0]: a server needs http_url or grpc_url"),
        ("regions: [\n  - oops: {\n", "malformed YAML: line"),
        ("- just\n- a list\n", "(top level): expected a mapping, got list"),
    ],
    ids=["missing-key", "bad-url", "unknown-region", "bad-enum", "wrong-type", "unknown-key", "no-url", "malformed", "not-mapping"],
)
def test_bad_config_one_line_with_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert msg.startswith(str(path) + ": ")
    assert expected in msg
    assert "\n" not in msg

    res = CliRunner().invoke(app, ["--config", str(path), "config", "validate"])
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in res.output


def test_missing_config_file_says_how_to_pass_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRITONOPS_CONFIG", raising=False)
    res = CliRunner().invoke(app, ["config", "validate"])
    assert res.exit_code == 1
    assert "tritonops.yaml: config file not found (pass --config or set TRITONOPS_CONFIG)" in res.stderr


def test_config_found_via_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_cfg = _write(tmp_path, GOOD)
    other = tmp_path / "cwd"
    # config validate also checks that each config's repository exists.
    (tmp_path / "model_repos" / "prod").mkdir(parents=True)
    (other / "model_repos" / "default").mkdir(parents=True)
    (other / "tritonops.yaml").write_text("regions: {}\n")
    monkeypatch.chdir(other)
    monkeypatch.setenv("TRITONOPS_CONFIG", str(env_cfg))
    res = CliRunner().invoke(app, ["config", "validate", "-o", "json"])
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(res.stdout)["regions"]) == ["eu-west-1", "us-east-1"]
    monkeypatch.delenv("TRITONOPS_CONFIG")
    res = CliRunner().invoke(app, ["config", "validate", "-o", "json"])
    assert json.loads(res.stdout)["regions"] == {}


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, "regions: 5\n")
    res = CliRunner().invoke(app, ["--debug", "--config", str(path), "config", "validate"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError)


def test_server_models_must_respect_residency() -> None:
    data = {
        "regions": {"eu-west-1": {"bucket": "s3://b/p", "servers": [{"name": "s", "http_url": "http://h:1", "models": ["m"]}]},
                    "us-east-1": {"bucket": "s3://c/p"}},
        "models": {"m": {"regions": ["us-east-1"]}},
    }
    with pytest.raises(ConfigError, match=r"regions.eu-west-1.servers\[0\].models\[0\]: model 'm' is not allowed"):
        parse_config(data)


def test_region_demand_section(tmp_path: Path) -> None:
    demand = (
        "    demand:\n      window_s: 600\n      max_loads_per_run: 2\n      sources:\n        - kind: triton\n"
        "        - kind: prometheus\n          url: http://prom:9090\n          query: sum by (model) (x)\n"
    )
    cfg = load_config(_write(tmp_path, GOOD.replace("    servers:\n      - name: eu-gpu-0\n", demand + "    servers:\n      - name: eu-gpu-0\n")))
    d = cfg.region("eu-west-1").demand
    assert d is not None and d.window_s == 600 and d.max_loads_per_run == 2 and d.hysteresis == 0.25
    assert [s.kind for s in d.sources] == ["triton", "prometheus"]
    assert cfg.region("us-east-1").demand is None
    bad = demand.replace("kind: triton", "kind: carrier-pigeon")
    with pytest.raises(ConfigError) as ei:
        load_config(_write(tmp_path, GOOD.replace("    servers:\n      - name: eu-gpu-0\n", bad + "    servers:\n      - name: eu-gpu-0\n")))
    assert "regions.eu-west-1.demand.sources[0]" in str(ei.value) and "\n" not in str(ei.value)
