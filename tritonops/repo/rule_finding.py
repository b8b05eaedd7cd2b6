"""Findings: one of a Triton rule (what Triton says, and where in config.pbtxt to point) and a
``Problem`` (a finding placed in a file, with its line).

Kept apart from validate.py so the rule modules (triton_rules, ensemble_rules) and sync's cheap
drift check (repo/drift.py) import nothing from it (validate pulls in protobuf and onnx).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    message: str
    # A regex for the line of config.pbtxt the finding is about; None when no line fits.
    pattern: str | None = None


def name_pattern(name: str) -> str:
    return rf'"{re.escape(name)}"'


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}
