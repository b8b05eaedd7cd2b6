"""One wording for every user-written YAML file (tritonops.yaml, recipes): ``<file>: <key.path>: <message>``.

Both files are read by :func:`load_yaml` (libyaml's C loader when PyYAML has it: a 6.7 MB
tritonops.yaml took most of a minute in the pure-Python one) and validated by pydantic, whose
first error :func:`format_validation_error` turns into that one line.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tritonops.errors import TritonOpsError

# libyaml's loader is about 10x faster; same results for the safe subset.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KeyedError(ValueError):
    """A validation error that knows its own key path (raised from model-level validators)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def key_path(loc: tuple[Any, ...], skip: Collection[str] = ()) -> str:
    """``("regions", "eu", "servers", 0, "name")`` -> ``regions.eu.servers[0].name``.

    ``skip``: discriminator tags pydantic adds to the location of a tagged union (noise to a user).
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in skip:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(source: str | Path, err: ValidationError, skip: Collection[str] = ()) -> str:
    """The first problem as ``<file>: <key.path>: <message>``, with a count of the others."""
    errors = err.errors()
    first = errors[0]
    ctx_err = first.get("ctx", {}).get("error")
    if isinstance(ctx_err, KeyedError):
        key, msg = ctx_err.key, ctx_err.message
    else:
        key = key_path(tuple(first["loc"]), skip)
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "missing":
            msg = "required key is missing"
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {msg}{suffix}"


def load_yaml(path: Path, raw: bytes, error: type[TritonOpsError]) -> Any:
    """Parse a user-written YAML file's bytes; every failure is one line naming the file (and line)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): is it a binary file?"
        ) from None
    try:
        return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e).splitlines()[0]
        raise error(f"{path}: malformed YAML: {where}{problem}") from None
