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

# libyaml's parser when PyYAML was built with it; same results for the safe subset.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"


class _Unusual(Exception):
    """An anchor, alias, explicit tag, merge key, complex key or second document: use the full loader."""


def _build(loader: Any) -> Any:
    """Plain dicts, lists and scalars straight from the parser's events (no node tree).

    PyYAML composes a Python node per scalar and constructs it afterwards: for 200,000 model rules
    that is most of a minute. Plain YAML (what tritonops.yaml and recipes are) needs neither: a
    plain scalar whose first character starts no implicit type is a str; anything else goes through
    the loader's own resolver and constructors, so the result is the one ``yaml.safe_load`` gives.
    """
    first = set(loader.yaml_implicit_resolvers)
    if None in first:
        raise _Unusual
    nokey = object()
    stack: list[list[Any]] = []  # [container, pending mapping key or nokey]
    root: Any = None

    def add(v: Any) -> None:
        nonlocal root
        if not stack:
            root = v
            return
        top = stack[-1]
        if type(top[0]) is list:
            top[0].append(v)
        elif top[1] is nokey:
            if isinstance(v, (dict, list)):
                raise _Unusual
            top[1] = v
        else:
            top[0][top[1]] = v
            top[1] = nokey

    docs = 0
    while True:
        ev = loader.get_event()
        t = type(ev)
        if t is yaml.ScalarEvent:
            if ev.anchor is not None or ev.tag not in (None, "!"):
                raise _Unusual
            v = ev.value
            if ev.implicit[0] and v and v[0] not in first:
                add(v)
                continue
            tag = loader.resolve(yaml.ScalarNode, v, ev.implicit)
            if tag == _STR_TAG:
                add(v)
            elif tag == "tag:yaml.org,2002:merge":
                raise _Unusual
            else:
                add(loader.construct_object(yaml.ScalarNode(tag, v, ev.start_mark, ev.end_mark, ev.style), deep=True))
        elif t is yaml.MappingStartEvent or t is yaml.SequenceStartEvent:
            if ev.anchor is not None or (ev.tag is not None and not ev.implicit):
                raise _Unusual
            c: Any = {} if t is yaml.MappingStartEvent else []
            add(c)
            stack.append([c, nokey])
        elif t is yaml.MappingEndEvent or t is yaml.SequenceEndEvent:
            stack.pop()
        elif t is yaml.AliasEvent:
            raise _Unusual
        elif t is yaml.DocumentStartEvent:
            docs += 1
            if docs > 1:
                raise _Unusual
        elif t is yaml.StreamEndEvent:
            return root


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, several times faster on large plain files (see _build)."""
    loader = SafeLoader(text)
    try:
        return _build(loader)
    except _Unusual:
        pass
    finally:
        loader.dispose()
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader (C or Python)


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
        return safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e).splitlines()[0]
        raise error(f"{path}: malformed YAML: {where}{problem}") from None
