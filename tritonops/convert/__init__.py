"""Conversion: recipes (converters/*.yaml) -> ONNX / fp16 / int8 / TensorRT versions, gated on accuracy."""

from __future__ import annotations

from tritonops.convert.pipeline import ConvertReport, RecipeResult, TargetResult, TargetStatus, convert
from tritonops.convert.recipe import Recipe, TargetKind, load_recipe

__all__ = [
    "ConvertReport",
    "RecipeResult",
    "Recipe",
    "TargetKind",
    "TargetResult",
    "TargetStatus",
    "convert",
    "load_recipe",
]
