"""Bad command-line arguments: unknown options and commands, missing or malformed values, values out
of range, names that do not exist. Each is one line (`error: tritonops <cmd>: ...` for usage errors,
exit 2; exit 1 for a value the library refuses), nothing on stdout, and no file written.

Categories: usage (click), values refused by tritonops (regions, models, keep counts, probes,
plans, paths).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import assert_refused, invoke, tree_hash
from tests.repo.conftest import make_python_model, python_config

CONFIG = """\
repository: repo
state_dir: state
regions:
  eu-west-1:
    bucket: file://BUCKET
    servers:
      - name: eu-gpu-0
        http_url: http://127.0.0.1:9
models:
  m:
    regions: [eu-west-1]
"""

# (id, argv after `tritonops -c CFG`, exit code, strings the line names)
USAGE: list[tuple[str, list[str], list[str]]] = [
    ("unknown-command", ["frobnicate"], ["No such command 'frobnicate'"]),
    ("unknown-root-option", ["--frob"], ["--frob"]),
    ("unknown-sub-option", ["repo", "list", "--frob"], ["tritonops repo list", "--frob"]),
    ("repo-unknown-sub", ["repo", "frob"], ["tritonops repo", "frob"]),
    ("repo-add-no-model", ["repo", "add"], ["tritonops repo add", "model"]),
    ("repo-add-no-from", ["repo", "add", "m"], ["tritonops repo add", "--from"]),
    ("repo-add-from-no-value", ["repo", "add", "m", "--from"], ["--from"]),
    ("repo-prune-keep-word", ["repo", "prune", "--keep", "two"], ["--keep", "valid integer"]),
    ("repo-diff-one-arg", ["repo", "diff", "a"], ["tritonops repo diff"]),
    ("sync-workers-zero", ["sync", "--region", "eu-west-1", "--workers", "0"], ["--workers"]),
    ("sync-workers-huge", ["sync", "--region", "eu-west-1", "--workers", "1000"], ["--workers"]),
    ("sync-max-delete-neg", ["sync", "--region", "eu-west-1", "--max-delete", "-1"], ["--max-delete"]),
    ("sync-region-no-value", ["sync", "--region"], ["--region"]),
    ("output-bad", ["repo", "list", "-o", "xml"], ["xml"]),
    ("mem-no-server", ["mem"], ["tritonops mem", "--server"]),
    ("load-timeout-zero", ["load", "m", "--server", "eu-gpu-0", "--timeout", "0"], ["--timeout"]),
    ("load-timeout-word", ["load", "m", "--server", "eu-gpu-0", "--timeout", "soon"], ["--timeout", "valid number"]),
    ("unload-wait-zero", ["unload", "m", "--server", "eu-gpu-0", "--wait-timeout", "0"], ["--wait-timeout"]),
    ("status-no-region", ["status"], ["tritonops status", "--region"]),
    ("plan-no-region", ["plan"], ["tritonops plan", "--region"]),
    ("reconcile-no-region", ["reconcile"], ["tritonops reconcile", "--region"]),
    ("apply-no-file", ["apply"], ["tritonops apply"]),
    ("convert-no-recipe", ["convert"], ["tritonops convert"]),
    ("config-unknown-sub", ["config", "frob"], ["tritonops config", "frob"]),
]

REFUSED: list[tuple[str, list[str], list[str]]] = [
    ("sync-unknown-region", ["sync", "--region", "mars-1"], ["'mars-1'"]),
    ("sync-no-region", ["sync"], ["--region"]),
    ("sync-both-region-flags", ["sync", "--region", "eu-west-1", "--all-regions"], ["--all-regions"]),
    ("status-unknown-region", ["status", "--region", "mars-1"], ["'mars-1'"]),
    ("plan-unknown-region", ["plan", "--region", "mars-1"], ["'mars-1'"]),
    ("reconcile-unknown-region", ["reconcile", "--region", "mars-1"], ["'mars-1'"]),
    ("repo-add-bad-model-name", ["repo", "add", "bad name", "--from", "SRC"], ["'bad name'"]),
    ("repo-add-dot-model-name", ["repo", "add", ".hidden", "--from", "SRC"], ["'.hidden'"]),
    ("repo-add-config-missing", ["repo", "add", "m", "--from", "SRC", "--config", "nope.pbtxt"], ["nope.pbtxt"]),
    ("repo-add-from-missing", ["repo", "add", "m", "--from", "nowhere"], ["nowhere", "no such file"]),
    ("repo-prune-keep-zero", ["repo", "prune", "--keep", "0"], ["--keep", "0"]),
    ("repo-diff-unknown-version", ["repo", "diff", "m@1", "m@9"], ["no version 9"]),
    ("repo-diff-unknown-model", ["repo", "diff", "ghost@1", "ghost@2"], ["ghost"]),
    ("repo-list-missing-repo", ["repo", "list", "--repo", "nowhere"], ["nowhere", "does not exist"]),
    ("mem-probe-bogus", ["mem", "--server", "eu-gpu-0", "--probe", "bogus"], ["--probe", "'bogus'"]),
    ("load-probe-bogus", ["load", "m", "--server", "eu-gpu-0", "--probe", "bogus"], ["--probe", "'bogus'"]),
    ("unload-probe-bogus", ["unload", "m", "--server", "eu-gpu-0", "--probe", "bogus"], ["--probe", "'bogus'"]),
    ("mem-unknown-server-name", ["mem", "--server", "nowhere"], ["'nowhere'", "eu-gpu-0"]),
    ("unload-unknown-server-name", ["unload", "m", "--server", "nowhere"], ["'nowhere'"]),
    ("apply-missing-plan", ["apply", "noplan.json"], ["noplan.json"]),
    ("apply-plan-not-json", ["apply", "CFG"], ["CFG"]),
    ("convert-missing-recipe", ["convert", "nope.yaml"], ["nope.yaml", "not found"]),
]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "bucket").mkdir()
    (tmp_path / "tritonops.yaml").write_text(CONFIG.replace("BUCKET", str(tmp_path / "bucket")))
    src = make_python_model(tmp_path / "src")
    res = invoke(["-c", str(tmp_path / "tritonops.yaml"), "repo", "add", "m", "--from", str(src),
                  "--config", str(python_config(tmp_path / "c.pbtxt"))])  # fmt: skip
    assert res.exit_code == 0, res.output
    return tmp_path


def _run(work: Path, argv: list[str], names: list[str], code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    cfg = str(work / "tritonops.yaml")
    argv = [a.replace("SRC", str(work / "src")).replace("CFG", cfg) for a in argv]
    names = [n.replace("CFG", cfg) for n in names]
    before = tree_hash(work)
    assert_refused(invoke(["-c", cfg, *argv]), names, code=code)
    assert tree_hash(work) == before


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in USAGE], ids=[c[0] for c in USAGE])
def test_usage_error_is_one_line(work: Path, argv: list[str], names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _run(work, argv, names, 2, monkeypatch)


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_bad_value_is_refused(work: Path, argv: list[str], names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _run(work, argv, names, 1, monkeypatch)
