"""Bad tritonops.yaml: each case runs `tritonops config validate` and must be refused in one line
naming the file and the key (see harness.py for what a refusal is).

Categories: schema (types, enums, unknown and missing keys), URLs, names and references,
paths on this machine (repository, state_dir, credentials_file, profile), file encoding and YAML syntax.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import assert_refused, invoke, tree_hash

GOOD = """\
repository: repo
state_dir: state
regions:
  eu-west-1:
    bucket: s3://acme-eu/triton
    endpoint_url: http://127.0.0.1:9000
    credentials_file: CREDS
    profile: tritonops
    servers:
      - name: eu-gpu-0
        http_url: http://127.0.0.1:8000
        metrics_url: http://127.0.0.1:8002/metrics
        memory_budget_bytes: 1000000
        models: [resnet]
  us-east-1:
    bucket: s3://acme-us
    servers:
      - name: us-gpu-0
        grpc_url: 127.0.0.1:8001
models:
  resnet:
    regions: [eu-west-1]
    placement: pinned
"""


def _sub(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# (id, tritonops.yaml text, strings the one line must contain besides the file name)
TEXT_CASES: list[tuple[str, str, list[str]]] = [
    ("empty", "", ["(top level)", "empty"]),
    ("only-comment", "# nothing here\n", ["(top level)", "empty"]),
    ("list-top", "- a\n- b\n", ["(top level)", "expected a mapping"]),
    ("scalar-top", "hello\n", ["(top level)", "expected a mapping"]),
    ("int-top", "42\n", ["(top level)", "expected a mapping"]),
    ("unclosed-flow", "regions: [\n", ["malformed YAML", "line"]),
    ("bad-indent", "regions:\n  eu:\n bucket: x\n", ["malformed YAML"]),
    ("tab-indent", "regions:\n\teu: {}\n", ["malformed YAML"]),
    ("dup-anchor-alias", "a: *nope\n", ["malformed YAML"]),
    ("nul-byte", "regions: {}\n\x00\n", ["malformed YAML"]),
    ("unknown-top-key", GOOD + "colour: blue\n", ["colour", "unknown key"]),
    ("format-version-2", "format_version: 2\n" + GOOD, ["format_version", "unsupported"]),
    ("format-version-str", "format_version: one\n" + GOOD, ["format_version"]),
    ("regions-list", "regions: [a, b]\n", ["regions"]),
    ("region-upper", _sub("  us-east-1:\n", "  US_East:\n"), ["regions", "US_East"]),
    ("region-scalar", "regions:\n  eu: s3://x\n", ["regions.eu"]),
    ("bucket-missing", _sub("    bucket: s3://acme-us\n", ""), ["regions.us-east-1.bucket", "missing"]),
    ("bucket-no-scheme", _sub("s3://acme-us", "acme-us"), ["regions.us-east-1.bucket", "s3://"]),
    ("bucket-http", _sub("s3://acme-us", "http://acme-us"), ["regions.us-east-1.bucket"]),
    ("bucket-dotdot", _sub("s3://acme-us", "s3://acme-us/a/../b"), ["regions.us-east-1.bucket", ".."]),
    ("bucket-dotdot-end", _sub("s3://acme-us", "s3://acme-us/.."), ["regions.us-east-1.bucket", ".."]),
    ("bucket-dot", _sub("s3://acme-us", "s3://acme-us/./x"), ["regions.us-east-1.bucket"]),
    ("bucket-dotdot-host", _sub("s3://acme-us", "s3://../x"), ["regions.us-east-1.bucket", ".."]),
    ("bucket-file-dotdot", _sub("s3://acme-us", "file:///srv/../etc"), ["regions.us-east-1.bucket", ".."]),
    ("bucket-s3-nohost", _sub("s3://acme-us", "s3:///x"), ["regions.us-east-1.bucket"]),
    ("bucket-int", _sub("s3://acme-us", "12"), ["regions.us-east-1.bucket"]),
    ("endpoint-ftp", _sub("http://127.0.0.1:9000", "ftp://h"), ["regions.eu-west-1.endpoint_url"]),
    ("endpoint-bare", _sub("http://127.0.0.1:9000", "127.0.0.1:9000"), ["regions.eu-west-1.endpoint_url"]),
    ("region-unknown-key", _sub("    bucket: s3://acme-us\n", "    bucket: s3://acme-us\n    zone: a\n"),
     ["regions.us-east-1.zone", "unknown key"]),
    ("servers-map", _sub("    servers:\n      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8001\n",
                         "    servers: {a: 1}\n"), ["regions.us-east-1.servers"]),
    ("server-no-url", _sub("        grpc_url: 127.0.0.1:8001\n", ""), ["regions.us-east-1.servers[0]", "http_url or grpc_url"]),
    ("server-no-name", _sub("      - name: us-gpu-0\n        grpc_url", "      - grpc_url"),
     ["regions.us-east-1.servers[0].name", "missing"]),
    ("server-name-list", _sub("name: us-gpu-0", "name: [1]"), ["regions.us-east-1.servers[0].name"]),
    ("server-http-ftp", _sub("http_url: http://127.0.0.1:8000", "http_url: ftp://x"),
     ["regions.eu-west-1.servers[0].http_url"]),
    ("server-metrics-bare", _sub("metrics_url: http://127.0.0.1:8002/metrics", "metrics_url: x:1"),
     ["regions.eu-west-1.servers[0].metrics_url"]),
    ("server-budget-zero", _sub("memory_budget_bytes: 1000000", "memory_budget_bytes: 0"),
     ["regions.eu-west-1.servers[0].memory_budget_bytes"]),
    ("server-budget-neg", _sub("memory_budget_bytes: 1000000", "memory_budget_bytes: -5"),
     ["regions.eu-west-1.servers[0].memory_budget_bytes"]),
    ("server-budget-str", _sub("memory_budget_bytes: 1000000", "memory_budget_bytes: 1GB"),
     ["regions.eu-west-1.servers[0].memory_budget_bytes"]),
    ("server-headroom-neg", _sub("memory_budget_bytes: 1000000", "headroom_bytes: -1"),
     ["regions.eu-west-1.servers[0].headroom_bytes"]),
    ("server-unknown-key", _sub("        grpc_url: 127.0.0.1:8001\n", "        grpc_url: 127.0.0.1:8001\n        gpu: 0\n"),
     ["regions.us-east-1.servers[0].gpu", "unknown key"]),
    ("server-dup", _sub("      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8001\n",
                        "      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8001\n"
                        "      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8003\n"),
     ["regions.us-east-1", "duplicate server name 'us-gpu-0'"]),
    ("server-models-str", _sub("models: [resnet]", "models: 7"), ["regions.eu-west-1.servers[0].models"]),
    ("server-model-forbidden", _sub("      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8001\n",
                                    "      - name: us-gpu-0\n        grpc_url: 127.0.0.1:8001\n        models: [resnet]\n"),
     ["regions.us-east-1.servers[0].models[0]", "not allowed in region 'us-east-1'"]),
    ("model-bad-name", _sub("  resnet:\n", "  'bad name':\n"), ["models.bad name", "not a valid Triton model name"]),
    ("model-unknown-region", _sub("regions: [eu-west-1]", "regions: [ap-south-1]"),
     ["models.resnet.regions[0]", "unknown region 'ap-south-1'"]),
    ("model-regions-str", _sub("regions: [eu-west-1]", "regions: 3"), ["models.resnet.regions"]),
    ("model-placement", _sub("placement: pinned", "placement: sometimes"), ["models.resnet.placement"]),
    ("model-unknown-key", _sub("    placement: pinned\n", "    placement: pinned\n    gpus: 2\n"),
     ["models.resnet.gpus", "unknown key"]),
    ("model-rule-list", _sub("  resnet:\n    regions: [eu-west-1]\n    placement: pinned\n", "  resnet: [1]\n"),
     ["models.resnet"]),
    ("default-placement", GOOD + "default_placement: always\n", ["default_placement"]),
    ("repository-list", _sub("repository: repo", "repository: [a]"), ["repository"]),
    ("repository-missing", _sub("repository: repo", "repository: nowhere"), ["repository", "nowhere", "does not exist"]),
    ("repository-is-file", _sub("repository: repo", "repository: afile"), ["repository", "afile", "not a folder"]),
    ("state-dir-is-file", _sub("state_dir: state", "state_dir: afile"), ["state_dir", "afile", "is a file"]),
    ("credentials-missing", _sub("credentials_file: CREDS", "credentials_file: /nonexistent/creds"),
     ["regions.eu-west-1.credentials_file", "/nonexistent/creds"]),
    ("credentials-is-dir", _sub("credentials_file: CREDS", "credentials_file: /tmp"),
     ["regions.eu-west-1.credentials_file", "/tmp"]),
    ("profile-missing", _sub("profile: tritonops", "profile: nobody-here"),
     ["regions.eu-west-1.profile", "'nobody-here'", "not found"]),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "creds").write_text("[tritonops]\naws_access_key_id = a\naws_secret_access_key = b\n")
    return tmp_path


def _refused(workdir: Path, cfg: Path, names: list[str]) -> None:
    before = tree_hash(workdir)
    res = invoke(["--config", str(cfg), "config", "validate"])
    assert_refused(res, [str(cfg), *names], code=1)
    assert tree_hash(workdir) == before


def test_the_base_config_is_valid(workdir: Path) -> None:
    cfg = workdir / "tritonops.yaml"
    cfg.write_text(GOOD.replace("CREDS", str(workdir / "creds")))
    res = invoke(["--config", str(cfg), "config", "validate"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("text", "names"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_bad_tritonops_yaml(workdir: Path, text: str, names: list[str]) -> None:
    cfg = workdir / "tritonops.yaml"
    cfg.write_text(text.replace("CREDS", str(workdir / "creds")))
    _refused(workdir, cfg, names)


# Bytes that are not UTF-8 text: named as such, with the offset, never `internal error: UnicodeDecodeError`.
BYTE_CASES = [
    ("latin1", "regions: {}\n# caf\xe9\n".encode("latin-1"), ["not UTF-8", "byte 0xe9 at offset 17"]),
    ("utf16", "regions: {}\n".encode("utf-16"), ["not UTF-8"]),
    ("binary-gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", ["not UTF-8"]),
    ("binary-png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["not UTF-8"]),
    ("lone-continuation", b"models:\n  a\x80b: {}\n", ["not UTF-8"]),
    ("truncated-utf8", b"models:\n  caf\xc3", ["not UTF-8"]),
]


@pytest.mark.parametrize(("raw", "names"), [c[1:] for c in BYTE_CASES], ids=[c[0] for c in BYTE_CASES])
def test_non_utf8_tritonops_yaml(workdir: Path, raw: bytes, names: list[str]) -> None:
    cfg = workdir / "tritonops.yaml"
    cfg.write_bytes(raw)
    _refused(workdir, cfg, names)


def test_config_that_is_a_folder_or_missing(workdir: Path) -> None:
    _refused(workdir, workdir / "repo", ["cannot read"])
    _refused(workdir, workdir / "nope.yaml", ["config file not found"])
