"""Triton's config.pbtxt, read and written with Triton's own schema (``model_config_pb2``).

Parsing with the real protobuf schema means an unknown or misspelt field is an error here, as it
is in Triton, instead of a key silently ignored by a hand-written parser.

Writing has one trap: ModelConfig is proto3, and protobuf's text format leaves out every scalar
equal to its zero value. ``max_batch_size: 0`` is the one that matters to a reader (it says "this
model does not batch, dims are the full shape"), so it is always written explicitly.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from google.protobuf import text_format

from tritonops.errors import RepositoryError

_PB2 = "tritonclient.grpc.model_config_pb2"


def _load_model_config_pb2() -> ModuleType:
    """Triton's schema module without ``tritonclient.grpc``'s ``__init__``.

    That ``__init__`` imports grpc and numpy (about 0.15 s) which parsing a config never uses; the
    pb2 module itself needs only protobuf. It is registered under its real name, so a later
    ``import tritonclient.grpc`` (the gRPC client) reuses it rather than registering the schema twice.
    """
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    import tritonclient

    path = Path(tritonclient.__path__[0]) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(_PB2, path)
    if spec is None or spec.loader is None or not path.is_file():  # an unusual install: the usual way
        return importlib.import_module(_PB2)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_PB2] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[_PB2]
        raise
    return mod


if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2
else:
    model_config_pb2 = _load_model_config_pb2()

ModelConfig = model_config_pb2.ModelConfig


def parse_config_text(text: str, source: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text; a RepositoryError names ``source`` and the line on bad text."""
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        line = e.GetLine()
        # ParseError's message starts with "line:col : "; keep only the reason.
        reason = re.sub(r"^\d+:\d+\s*:\s*", "", str(e))
        where = f"{source}:{line}" if line else source
        raise RepositoryError(f"{where}: invalid config.pbtxt: {reason}") from None
    return cfg


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Read and parse a config.pbtxt file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RepositoryError(f"{path}: config.pbtxt missing") from None
    except UnicodeDecodeError as e:
        raise RepositoryError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_config_text(text, str(path))


def config_to_text(cfg: model_config_pb2.ModelConfig) -> str:
    """Text format, with ``max_batch_size: 0`` kept explicit (protobuf would drop it)."""
    text = text_format.MessageToString(cfg)
    if cfg.max_batch_size == 0:
        # Put it after the top-level name/platform lines, where people look for it.
        lines = text.splitlines(keepends=True)
        at = 0
        while at < len(lines) and re.match(r"^(name|platform): ", lines[at]):
            at += 1
        lines.insert(at, "max_batch_size: 0\n")
        text = "".join(lines)
    return text


def line_of(text: str, pattern: str, start: int = 1) -> int | None:
    """1-based line of the first line (from ``start``) matching the regex ``pattern``; None if none."""
    rx = re.compile(pattern)
    for i, line in enumerate(text.splitlines(), 1):
        if i >= start and rx.search(line):
            return i
    return None
