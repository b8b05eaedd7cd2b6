"""What every bad-input case asserts, in one place.

A refusal is: a non-zero exit, exactly one line on stderr (``error: ...``) naming the culprit,
nothing on stdout, no traceback, no ``internal error:``, and nothing written (a hash of every
entry of the trees involved, taken with lstat so a FIFO is never opened).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tritonops.cli import app


def tree_hash(*roots: Path) -> str:
    """Names, kinds, modes, link targets and bytes of every entry under ``roots`` (lstat only)."""
    h = hashlib.sha256()
    for root in roots:
        if not os.path.lexists(root):
            h.update(f"{root}: absent\n".encode())
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                st = os.lstat(p)
                h.update(f"{p}|{stat.S_IFMT(st.st_mode)}|{stat.S_IMODE(st.st_mode)}\n".encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(p).encode())
                elif stat.S_ISREG(st.st_mode):
                    h.update(p.read_bytes())
    return h.hexdigest()


def bucket_hash(client: Any, bucket: str) -> str:
    """Every key, size and ETag in a bucket."""
    h = hashlib.sha256()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            h.update(f"{o['Key']}|{o['Size']}|{o['ETag']}\n".encode())
    return h.hexdigest()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env)


def assert_refused(res: Any, names: Iterable[str], code: int | None = None, report: bool = False) -> str:
    """One line naming every string in ``names``; returns that line.

    ``report``: a command whose output is a report of problems (`repo validate`) prints them on
    stdout; the one line on stderr is then its verdict, and the culprit is named on stdout.
    """
    assert res.exit_code != 0, f"exit 0 on bad input: {res.output!r}"
    if code is not None:
        assert res.exit_code == code, (res.exit_code, res.stderr)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    line = lines[0]
    assert report or line.startswith("error: "), line
    assert "internal error" not in line, line
    where = res.stdout if report else line
    for n in names:
        assert n in where, f"{n!r} not named in {where!r}"
    if not report:
        assert res.stdout == "", res.stdout
    return line
