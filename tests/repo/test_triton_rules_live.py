"""A sample of the rules corpus loaded by the real tritonserver: it refuses and loads what the table says.

Python-backend cases only (the local Triton has no other backend). One server, explicit model
control; each case's repository replaces the previous one before its load call.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.repo.test_triton_rules import write_case
from tests.repo.triton_rules_corpus import CASES, Case
from tritonops.dev import stack

# case -> the words of Triton's refusal, found in its reply or (for a refusal at poll time) its log.
SAMPLE = {
    "reshape-nobatch-empty-output": "cannot have empty reshape for non-batching model",
    "reshape-var-count0-input": "has different number of variable-size dimensions",
    "batch-output-unknown-target": "unknown target output name 'OUTPUT1'",
    "batch-input-dtype-type_int64": "batch input data type must be TYPE_INT32 or TYPE_FP32",
    "dynamic-default-priority-level0": "default priority level must be in range [1, 3]",
    "sequence-control-kind-start-multiple": "specifies multiple CONTROL_SEQUENCE_START tensors",
    "runtime-python-model-py": "unable to find Python backend based backend library 'model.py'",
    "ensemble-inconsistent-shape": "inconsistent shape: [-1,3] is inferred from model m",
    "ensemble-invalid-batch-size": "only allows maximum batch size to be 8",
    "ensemble-unmapped-input": "input INPUT1 in model add2 is not mapped to any ensemble tensors",
}
# Not sampled: model_metrics (this tritonserver predates the field and refuses it as unknown).
BY_ID = {c.id: c for c in CASES}
LIVE = [BY_ID[f"{s}-{v}"] for s in SAMPLE for v in ("bad", "ok")] + [BY_ID["python-auto-complete-no-io"]]
Live = tuple[httpclient.InferenceServerClient, Path, Path]


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("live-rules")
    home = stack.prepare_triton_home(base / "tritonserver")
    repo = base / "repo"
    repo.mkdir()
    log = base / "triton.log"
    server = stack.start_triton(home, str(repo), log)
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        yield client, repo, log
    finally:
        client.close()
        stack.stop(server.record)


def load(client: httpclient.InferenceServerClient, repo: Path, case: Case) -> str | None:
    """Triton's error loading the case's model, None when it loads."""
    for m in client.get_model_repository_index():
        if m.get("state") == "READY":
            client.unload_model(m["name"], unload_dependents=True)
    shutil.rmtree(repo)
    repo.mkdir()
    write_case(repo, case)
    try:
        client.load_model(case.model)
    except InferenceServerException as e:
        return str(e)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("case", LIVE, ids=[c.id for c in LIVE])
def test_triton_agrees(case: Case, triton: Live) -> None:
    client, repo, log = triton
    log_at = log.stat().st_size
    error = load(client, repo, case)
    if case.rejected:
        assert error is not None, f"the table says Triton rejects it ({case.triton}), but it loaded"
        with log.open(errors="replace") as f:
            f.seek(log_at)
            said = error + f.read()
        assert SAMPLE[case.id.removesuffix("-bad")] in said, said[-2000:]
    else:
        assert error is None, f"the table says Triton loads it, but: {error}"
