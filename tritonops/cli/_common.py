"""Shared CLI plumbing: global state, output format, printing data and messages.

Data goes to stdout (a rich table for people, JSON with ``format_version`` for scripts); logs,
progress and errors go to stderr. Library code never prints: only this package does.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # rich and pydantic (via config) are imported by the commands that use them
    from rich.console import Console

    from tritonops.config import Config

FORMAT_VERSION = 1


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


OutputOpt = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format: a table for people, or json for scripts."),
]


@dataclass
class GlobalState:
    debug: bool = False
    config_path: Path | None = None


STATE = GlobalState()


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def _width() -> int | None:
    # A pipe or a log file is not 80 columns wide: don't truncate tables there.
    return None if sys.stdout.isatty() else 200


def out_console() -> Console:
    # Built per call so CliRunner's captured stdout is honoured.
    from rich.console import Console

    return Console(file=sys.stdout, no_color=_no_color(), soft_wrap=True, width=_width())


def err_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, no_color=_no_color(), soft_wrap=True)


def get_config() -> Config:
    from tritonops.config import load_config

    return load_config(STATE.config_path)


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return obj


def emit_json(data: dict[str, Any]) -> None:
    """One JSON document on stdout, ``format_version`` first."""
    doc = {"format_version": FORMAT_VERSION, **to_jsonable(data)}
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit(fmt: OutputFormat, data: dict[str, Any], render: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON, or call ``render`` with the stdout console for people."""
    if fmt is OutputFormat.json:
        emit_json(data)
    else:
        render(out_console())


def info(message: str) -> None:
    """A message for the person running the command (stderr, so stdout stays data)."""
    err_console().print(message, highlight=False)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"
