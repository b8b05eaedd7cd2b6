"""Fixtures for the convert tests: the example recipes copied under unique model names, converted once."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tritonops.cli import app

CONVERTERS = Path(__file__).resolve().parents[2] / "converters"
EXAMPLES = ("mlp", "iris_sklearn")


def copy_recipe(src_name: str, dest: Path, model: str, **changes: Any) -> Path:
    """The example recipe (and the files beside it) in ``dest``, writing model ``model``."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in CONVERTERS.iterdir():
        if p.suffix in (".py", ".npz"):
            shutil.copy(p, dest / p.name)
    data = yaml.safe_load((CONVERTERS / f"{src_name}.yaml").read_text())
    data["destination"]["model"] = model
    data["destination"]["repository"] = "repo"
    # Short speed runs: the figures are recorded, not judged, in these tests.
    data["speed"] = {"iterations": 20, "budget_s": 0.3}
    for k, v in changes.items():
        data[k] = v
    out = dest / f"{src_name}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run_cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@dataclass
class Converted:
    root: Path  # the repository
    recipes: dict[str, Path]
    models: dict[str, str]  # example -> base model name
    report: dict[str, Any]
    left_in_cwd: list[str]  # files the conversion left in the directory it ran from


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    """Both examples converted by the CLI, as a user runs it, into one fresh repository."""
    base = tmp_path_factory.mktemp("convert")
    models = {ex: f"{ex.replace('_', '-')}-{uuid.uuid4().hex[:8]}" for ex in EXAMPLES}
    recipes = {ex: copy_recipe(ex, base / "recipes", models[ex]) for ex in EXAMPLES}
    root = base / "repo"
    cwd = base / "cwd"
    cwd.mkdir()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        code, out, err = run_cli("convert", *map(str, recipes.values()), "--repo", str(root), "-o", "json")
    finally:
        os.chdir(previous)
    assert code == 0, err
    return Converted(root, recipes, models, json.loads(out), sorted(p.name for p in cwd.iterdir()))
