"""Start-up cost: a command imports only its own module; --version imports no CLI framework."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tritonops import __version__
from tritonops.cli import app
from tritonops.cli.root import COMMANDS, command_in

# Runs the real entry point in a fresh interpreter and reports which modules it imported.
_PROBE = """
import json, runpy, sys
sys.argv = ["tritonops", *json.loads(sys.argv[1])]
try:
    runpy.run_module("tritonops", run_name="__main__")
except SystemExit as e:
    assert e.code in (None, 0), e.code
print(json.dumps(sorted(sys.modules)))
"""


def _imported(*args: str) -> tuple[str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out, _, mods = proc.stdout.rstrip("\n").rpartition("\n")
    return out, set(json.loads(mods))


def test_the_command_table_names_the_module_that_registers_each_command() -> None:
    found = {c.name: c.callback.__module__ for c in app.registered_commands if c.callback and c.name}
    for g in app.registered_groups:
        assert g.typer_instance is not None and g.name
        mods = {c.callback.__module__ for c in g.typer_instance.registered_commands if c.callback}
        assert len(mods) == 1, (g.name, mods)
        found[g.name] = mods.pop()
    assert found == {name: f"tritonops.cli.{m}" for name, m in COMMANDS.items()}


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["sync", "--region", "eu"], "sync"),
        (["-c", "x.yaml", "--debug", "repo", "list"], "repo"),
        (["--config", "sync", "plan"], "plan"),  # the config file may be called like a command
        (["--config=x.yaml", "-v", "status"], "status"),
        (["--help", "sync"], None),  # root help lists every command
        (["-h"], None),
        ([], None),
        (["synk"], None),  # a typo: click's "did you mean" needs every command
    ],
)
def test_dispatch_finds_the_command(argv: list[str], command: str | None) -> None:
    assert command_in(argv) == command


def test_version_imports_no_cli_framework() -> None:
    out, mods = _imported("--version")
    assert out == f"tritonops {__version__}"
    assert not {m.split(".")[0] for m in mods} & {"typer", "rich", "pydantic", "click"}


def test_a_command_imports_only_its_own_module() -> None:
    out, mods = _imported("sync", "--help")
    assert "Publish the local repository" in out
    cli_mods = {m for m in mods if m.startswith("tritonops.cli.")}
    assert cli_mods == {"tritonops.cli.root", "tritonops.cli._common", "tritonops.cli.sync"}
    # Help needs no S3 client, no gRPC, no numpy.
    assert not {m.split(".")[0] for m in mods} & {"boto3", "botocore", "grpc", "numpy"}


def test_root_help_lists_every_command() -> None:
    out, _ = _imported("--help")
    for name in COMMANDS:
        assert f" {name} " in out, name
