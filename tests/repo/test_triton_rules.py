"""`repo validate` against Triton's own rules: a corpus of configs Triton rejects and accepts.

Measured over the whole corpus: the share of Triton's rejections tritonops catches (>= 95%) and
the false alarms on configs Triton loads (none). Each case is also its own test, so a regression
names the rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import STUB_MODEL_PY
from tests.repo.triton_rules_corpus import CASES, Case
from tritonops.repo.validate import Problem, check_config, parse_for_validation, version_dirs_of


def write_case(root: Path, case: Case) -> None:
    for name, text in case.models.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(text)
        if 'platform: "ensemble"' in text:
            (root / name / "1" / ".keep").write_text("")
        elif 'platform: "tensorrt_plan"' not in text:
            (root / name / "1" / "model.py").write_text(STUB_MODEL_PY)
    for rel, text in case.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def findings(root: Path, case: Case) -> list[Problem]:
    model_dir = root / case.model
    cfg, text, problems = parse_for_validation(model_dir / "config.pbtxt")
    if cfg is None:
        return problems
    known = {p.name for p in root.iterdir() if (p / "config.pbtxt").exists()}
    return check_config(
        cfg, model_dir / "config.pbtxt", text, model_name=case.model,
        version_dirs=version_dirs_of(model_dir), known_models=known,
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    write_case(tmp_path, case)
    got = findings(tmp_path, case)
    if case.rejected:
        assert got, f"Triton rejects it ({case.triton}) but tritonops finds nothing"
        assert any(case.key in str(p) for p in got), f"{case.key!r} not in {[str(p) for p in got]}"
    else:
        assert got == [], f"Triton loads it, but tritonops says: {[str(p) for p in got]}"


def test_corpus_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The numbers the issue asks for, over the whole corpus."""
    rejected = [c for c in CASES if c.rejected]
    accepted = [c for c in CASES if not c.rejected]
    caught = false_alarms = 0
    for i, case in enumerate(CASES):
        root = tmp_path / str(i)
        write_case(root, case)
        got = findings(root, case)
        if case.rejected and any(case.key in str(p) for p in got):
            caught += 1
        if not case.rejected and got:
            false_alarms += 1
    with capsys.disabled():
        print(
            f"\ntriton rules corpus: {len(CASES)} cases, {len(rejected)} rejected by Triton, "
            f"{caught} caught ({caught / len(rejected):.1%}); {len(accepted)} accepted, {false_alarms} false alarms"
        )
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)
    assert caught >= 0.95 * len(rejected)
    assert false_alarms == 0
    assert {c.rule for c in rejected} >= {
        "reshape", "batch_input", "batch_output", "priority", "sequence_batching",
        "model_metrics", "runtime", "ensemble",
    }  # fmt: skip
