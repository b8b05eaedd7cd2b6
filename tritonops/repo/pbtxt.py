"""Triton's config.pbtxt, read and written with Triton's own schema (``model_config_pb2``).

Parsing with the real protobuf schema means an unknown or misspelt field is an error here, as it
is in Triton, instead of a key silently ignored by a hand-written parser.

Writing has one trap: ModelConfig is proto3, and protobuf's text format leaves out every scalar
equal to its zero value. ``max_batch_size: 0`` is the one that matters to a reader (it says "this
model does not batch, dims are the full shape"), so it is always written explicitly.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonops.errors import RepositoryError

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
