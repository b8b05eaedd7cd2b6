"""A str-valued enum that reads as its value everywhere (``str()``, f-strings, ``%s`` logging, JSON).

Python 3.11's ``enum.StrEnum`` does this; tritonops still supports 3.10, where ``(str, Enum)``
alone prints as ``Class.member`` in an f-string (and does so on 3.11+ too).
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)
