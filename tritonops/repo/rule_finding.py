"""One finding of a Triton rule: what Triton says, and where in config.pbtxt to point.

Kept apart from validate.py so the rule modules (triton_rules, ensemble_rules) import nothing
from it: validate.py turns findings into Problems with the file's path and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    message: str
    # A regex for the line of config.pbtxt the finding is about; None when no line fits.
    pattern: str | None = None


def name_pattern(name: str) -> str:
    return rf'"{re.escape(name)}"'
