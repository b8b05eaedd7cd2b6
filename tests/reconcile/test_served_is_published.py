"""What is served is what was published: a version whose objects in the bucket differ from its manifest
is refused by reconcile (the previous version keeps serving), and `sync --repair` puts it right.

Real stack: moto S3, real Triton, the real CLI; the bucket is tampered with through a plain S3 client,
as a user with bucket access would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reconcile.conftest import RecRegions, model_py
from tests.reconcile.test_e2e import CONFIG, cli, infer, ready
from tritonops.config import RegionConfig
from tritonops.fileio import sha256_bytes
from tritonops.repo.repository import add_version
from tritonops.store.s3 import s3_client

EU = "eu-west-1"
pytestmark = pytest.mark.slow


def _key(rc: RegionConfig, rel: str) -> str:
    return f"{rc.prefix}/{rel}" if rc.prefix else rel


def tamper_bytes(rc: RegionConfig, model: str, v: int) -> str:
    """Same size, other bytes, uploaded as `aws s3 cp` would (no sha256 metadata)."""
    body = model_py(9.0)
    s3_client(rc).put_object(Bucket=rc.bucket_name, Key=_key(rc, f"{model}/{v}/model.py"), Body=body)
    return f"{model}/{v}/model.py"


def forge_bytes(rc: RegionConfig, model: str, v: int) -> str:
    """Other bytes, with the sha256 metadata copied from the real object (a forgery: only a content check sees it)."""
    s3 = s3_client(rc)
    key = _key(rc, f"{model}/{v}/model.py")
    meta = s3.head_object(Bucket=rc.bucket_name, Key=key)["Metadata"]
    s3.put_object(Bucket=rc.bucket_name, Key=key, Body=model_py(9.0), Metadata=meta)
    return f"{model}/{v}/model.py"


def lie_metadata(rc: RegionConfig, model: str, v: int) -> str:
    """Same bytes, metadata rewritten to claim another sha256."""
    s3 = s3_client(rc)
    key = _key(rc, f"{model}/{v}/model.py")
    s3.copy_object(
        Bucket=rc.bucket_name, Key=key, CopySource={"Bucket": rc.bucket_name, "Key": key},
        MetadataDirective="REPLACE", Metadata={"sha256": sha256_bytes(b"something else")},
    )  # fmt: skip
    return f"{model}/{v}/model.py"


def add_extra(rc: RegionConfig, model: str, v: int) -> str:
    s3_client(rc).put_object(Bucket=rc.bucket_name, Key=_key(rc, f"{model}/{v}/extra.py"), Body=b"x = 1\n")
    return f"{model}/{v}/extra.py"


def delete_file(rc: RegionConfig, model: str, v: int) -> str:
    s3_client(rc).delete_object(Bucket=rc.bucket_name, Key=_key(rc, f"{model}/{v}/model.py"))
    return f"{model}/{v}/model.py"


# (tamper, found in the one-line refusal, reconcile flags, sync --repair flags)
CASES: list[tuple[Callable[[RegionConfig, str, int], str], str, list[str], list[str]]] = [
    (tamper_bytes, "found content sha256", [], []),
    (lie_metadata, "found recorded sha256", [], []),
    (add_extra, "found an extra object", [], []),
    (delete_file, "found no object", [], []),
    (forge_bytes, "found content sha256", ["--verify-content"], ["--verify"]),
]


def _add(rr: RecRegions, tmp_path: Path, model: str, factor: float) -> None:
    src = tmp_path / f"src-{factor}"
    src.mkdir()
    (src / "model.py").write_bytes(model_py(factor))
    conf = tmp_path / f"{model}.pbtxt"
    conf.write_text(CONFIG.format(name=model))
    add_version(rr.config.repository_path, model, src / "model.py", config=conf)


def _run(rr: RecRegions, *args: str) -> tuple[int, dict[str, Any], str]:
    res = cli(rr, *args, "-o", "json")
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = {}
    return res.exit_code, doc, res.output


def test_tampered_version_is_refused_previous_keeps_serving_and_repair_fixes_it(
    rec_regions, unique, tmp_path: Path
) -> None:
    model = unique("pub")
    rr = rec_regions({})
    rc = rr.config.region(EU)
    server = rr.servers[EU]
    _add(rr, tmp_path, model, 1.0)
    assert cli(rr, "sync", "-r", EU).exit_code == 0
    code, doc, out = _run(rr, "reconcile", "-r", EU)
    assert code == 0, out
    assert infer(server, model) == [1.0, 2.0, 3.0, 4.0]

    for v, (tamper, found, rec_flags, repair_flags) in enumerate(CASES, start=2):
        _add(rr, tmp_path, model, float(v))
        assert cli(rr, "sync", "-r", EU).exit_code == 0
        key = tamper(rc, model, v)
        code, doc, out = _run(rr, "reconcile", "-r", EU, *rec_flags)
        assert code == 1, f"{tamper.__name__}: {out}"
        assert len(doc["refused"]) == 1, doc
        line = doc["refused"][0]
        assert f"region {EU}: model {model!r} version {v}: {key}: expected " in line, line
        assert found in line, line
        assert doc["results"] == []  # nothing loaded
        # The previous version keeps serving: really answering, with its own numbers.
        assert ready(server)[model] == [v - 1]
        assert infer(server, model) == [(v - 1) * x for x in (1.0, 2.0, 3.0, 4.0)]
        assert any(q["model"] == model and q["version"] == v for q in doc["quarantined"]), doc

        code, doc, out = _run(rr, "sync", "-r", EU, "--repair", *repair_flags)
        assert code == 0, out
        rep = doc["repair"]
        assert len(rep["found"]) == 1 and key in rep["found"][0], rep
        assert (rep["deleted"] if tamper is add_extra else rep["uploaded"]) == [key], rep

        code, doc, out = _run(rr, "reconcile", "-r", EU, *rec_flags)
        assert code == 0, f"{tamper.__name__} after repair: {out}"
        assert [(r["kind"], r["version"], r["result"]) for r in doc["results"]] == [("reload", v, "ok")]
        assert doc["refused"] == [] and not any(q["model"] == model for q in doc["quarantined"])
        assert ready(server)[model] == [v]
        assert infer(server, model) == [v * x for x in (1.0, 2.0, 3.0, 4.0)]

    # Nothing differs any more: a repair finds nothing, a reconcile does nothing.
    code, doc, out = _run(rr, "sync", "-r", EU, "--repair", "--verify")
    assert code == 0 and doc["repair"]["found"] == [] and doc["repair"]["checked_versions"] == len(CASES) + 1, out
    code, doc, out = _run(rr, "reconcile", "-r", EU)
    assert code == 0 and doc["results"] == [] and doc["refused"] == [], out


def test_first_load_of_a_tampered_version_loads_nothing(rec_regions, unique, tmp_path: Path) -> None:
    model = unique("first")
    rr = rec_regions({})
    rc = rr.config.region(EU)
    _add(rr, tmp_path, model, 3.0)
    assert cli(rr, "sync", "-r", EU).exit_code == 0
    saved = tmp_path / "plan.json"
    code, doc, out = _run(rr, "plan", "-r", EU, "--out", str(saved))
    assert code == 0 and [a["model"] for a in doc["actions"]] == [model], out
    add_extra(rc, model, 1)  # after the plan was made

    code, doc, out = _run(rr, "plan", "-r", EU)
    assert code == 0 and doc["actions"] == [], out
    assert any("refused to load" in n["message"] and f"{model}/1/extra.py" in n["message"] for n in doc["notes"])
    # The saved plan is not stale (the bucket gate's quarantine is not server state), and its load is
    # checked again at apply time: refused.
    code, doc, out = _run(rr, "apply", str(saved))
    assert code == 1 and len(doc["refused"]) == 1 and f"{model}/1/extra.py" in doc["refused"][0], out
    assert model not in ready(rr.servers[EU])
    code, doc, out = _run(rr, "reconcile", "-r", EU)
    assert code == 1 and doc["results"] == [] and model not in ready(rr.servers[EU]), out
