"""The CLI describes itself: every command has help text and is documented in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from tritonops import __version__
from tritonops.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if hasattr(cmd, "commands"):
            out += _commands(cmd, full + " ")
    return out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    root = typer.main.get_command(app)
    assert hasattr(root, "commands")
    cmds = _commands(root)
    assert len(cmds) >= 5
    # The README is the front door: its command table has a row for every command (and links its page).
    readme = README.read_text()
    runner = CliRunner()
    for name, cmd in cmds:
        assert (cmd.help or "").strip(), f"`tritonops {name}` has no help text"
        res = runner.invoke(app, [*name.split(), "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert (cmd.help or "").split("\n")[0].strip()[:30] in " ".join(res.stdout.split()), name
        group = hasattr(cmd, "commands")  # a group is documented by its commands' rows
        row = f"| `tritonops {name} " if group else f"| `tritonops {name}` |"
        assert row in readme, f"`tritonops {name}` has no row in README.md's command table"


def test_version() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"tritonops {__version__}"


def test_usage_error_exits_2() -> None:
    res = CliRunner().invoke(app, ["dev", "up", "--no-such-flag"])
    assert res.exit_code == 2


def test_real_entry_point_runs_as_a_subprocess(tmp_path: Path) -> None:
    bad = tmp_path / "tritonops.yaml"
    bad.write_text("regions:\n  EU: {bucket: s3://x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tritonops", "--config", str(bad), "config", "validate"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"error: {bad}: regions: region name 'EU' must be lowercase letters, digits and '-'"
