"""Conversion recipes: one YAML per model, validated by pydantic before anything runs.

A recipe names the source (a PyTorch factory, a scikit-learn estimator or an ONNX file), the
targets to build, tolerances that gate each target, the Triton settings and the destination.
Relative paths are relative to the recipe file. Errors name the recipe file and the field.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonops.errors import ConversionError
from tritonops.strenum import StrEnum
from tritonops.validation import format_validation_error, load_yaml

RECIPE_FORMAT_VERSION = 1
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DIM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# numpy dtype name -> Triton data type. Only what ONNX and Triton both carry.
DTYPES: dict[str, str] = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetKind(str, Enum):
    onnx = "onnx"
    onnx_fp16 = "onnx-fp16"
    onnx_int8_dynamic = "onnx-int8-dynamic"
    onnx_int8_static = "onnx-int8-static"
    tensorrt_fp16 = "tensorrt-fp16"
    tensorrt_int8 = "tensorrt-int8"

    @property
    def precision(self) -> str:
        return {"onnx": "fp32", "onnx-fp16": "fp16", "tensorrt-fp16": "fp16"}.get(self.value, "int8")

    @property
    def is_tensorrt(self) -> bool:
        return self.value.startswith("tensorrt")

    @property
    def model_suffix(self) -> str:
        # Each target is its own Triton model: config.pbtxt is per model and precisions have
        # different files, so a model's versions stay comparable (same precision, new weights).
        return {
            "onnx": "",
            "onnx-fp16": "-fp16",
            "onnx-int8-dynamic": "-int8",
            "onnx-int8-static": "-int8-static",
            "tensorrt-fp16": "-trt-fp16",
            "tensorrt-int8": "-trt-int8",
        }[self.value]

    @property
    def needs_calibration(self) -> bool:
        return self in (TargetKind.onnx_int8_static, TargetKind.tensorrt_int8)


class Tolerance(_Strict):
    """Limits on the difference between a target's outputs and the source's, per output.

    ``rel`` errors are ``|target - source| / max(|source|, 1e-3 * max|source|)``: the floor keeps
    near-zero reference values from turning noise into huge ratios. ``norm_max`` / ``norm_p99``
    are the largest / 99th-percentile absolute error divided by the output's largest magnitude:
    scale-free, and the natural measure for int8, whose step is a fraction of the range.
    ``mismatch`` is the fraction of elements that differ at all, for integer outputs (labels).
    ``None`` means not checked.
    """

    max_abs: float | None = None
    p99_abs: float | None = None
    max_rel: float | None = None
    p99_rel: float | None = None
    norm_max: float | None = None
    norm_p99: float | None = None
    mismatch: float | None = None


# Output kinds: labels (integer outputs), probabilities (rows of values in [0, 1] summing to 1 in the
# source), scores (every other float output). The gate picks the defaults by precision and kind.
class OutputKind(StrEnum):
    labels = "labels"
    probabilities = "probabilities"
    scores = "scores"


# Per precision and output kind. Scores: fp32 differs from the source only by kernel order; fp16
# keeps ~3 significant digits; int8 resolves ~1/255 of an activation's range per layer, so errors
# are judged against the output's range, not element by element (Polygraphy's single 1e-5 misfires
# on both). Labels: the fraction that may differ. Probabilities: a tree ensemble's probability is a
# vote count, and an input within float32 rounding of one tree's threshold moves it by a whole vote
# (1/n_trees) while every label agrees; measured over scikit-learn's bundled datasets (README,
# "How the defaults were chosen"): at most 0.01 on 4.5% of rows, versus 0.3-1.0 for a wrong model.
DEFAULT_TOLERANCES: dict[str, dict[str, dict[str, float | None]]] = {
    "fp32": {
        "labels": {"mismatch": 0.0},
        "probabilities": {"max_abs": 0.1, "p99_abs": 0.02},
        "scores": {"norm_max": 1e-4, "p99_rel": 1e-3},
    },
    "fp16": {
        "labels": {"mismatch": 0.02},
        "probabilities": {"max_abs": 0.1, "p99_abs": 0.02},
        "scores": {"norm_max": 1e-2, "norm_p99": 5e-3},
    },
    "int8": {
        "labels": {"mismatch": 0.05},
        "probabilities": {"max_abs": 0.1, "p99_abs": 0.05},
        "scores": {"norm_max": 0.1, "norm_p99": 0.05},
    },
}


class TensorSpec(_Strict):
    """One input: name, numpy dtype, shape with dims that are ints or names (dynamic)."""

    name: str
    dtype: str = "float32"
    shape: list[int | str]
    # Range of generated inputs when no validation data is given.
    low: float = -1.0
    high: float = 1.0

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unsupported dtype {v!r} (one of {', '.join(DTYPES)})")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int | str]) -> list[int | str]:
        if not v:
            raise ValueError("must have at least one dimension")
        for d in v:
            if isinstance(d, int) and d < 1:
                raise ValueError(f"dimension {d} must be >= 1 or a name for a dynamic dimension")
            if isinstance(d, str) and not DIM_NAME_RE.match(d):
                raise ValueError(f"dynamic dimension name {d!r} must be an identifier")
        return v

    @model_validator(mode="after")
    def _range(self) -> TensorSpec:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self

    @property
    def dynamic_dims(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, batch: int, other: int = 8) -> tuple[int, ...]:
        """A concrete shape: dim 0 (if dynamic) -> ``batch``; other dynamic dims -> ``other``."""
        return tuple(
            d if isinstance(d, int) else (batch if i == 0 else other) for i, d in enumerate(self.shape)
        )


class TorchSource(_Strict):
    kind: Literal["torch"]
    factory: str  # "module:function"; module is a .py beside the recipe or importable
    inputs: list[TensorSpec]
    outputs: list[str]
    opset: int = 18

    @field_validator("factory")
    @classmethod
    def _factory(cls, v: str) -> str:
        if v.count(":") != 1 or not all(v.split(":")):
            raise ValueError(f"{v!r} must be 'module:function'")
        return v


class SklearnSource(_Strict):
    kind: Literal["sklearn"]
    # Either a factory returning a fitted estimator, or a joblib/pickle file (trusted input:
    # unpickling runs code, like importing the factory does).
    factory: str | None = None
    path: str | None = None
    inputs: list[TensorSpec]
    opset: int = 17

    @model_validator(mode="after")
    def _one(self) -> SklearnSource:
        if (self.factory is None) == (self.path is None):
            raise ValueError("give exactly one of 'factory' or 'path'")
        if self.factory is not None and (self.factory.count(":") != 1 or not all(self.factory.split(":"))):
            raise ValueError(f"factory {self.factory!r} must be 'module:function'")
        if len(self.inputs) != 1:
            raise ValueError("a scikit-learn estimator takes exactly one input")
        return self


class OnnxSource(_Strict):
    kind: Literal["onnx"]
    path: str
    # Optional: inputs with names; when absent they are read from the graph.
    inputs: list[TensorSpec] | None = None


Source = Annotated[TorchSource | SklearnSource | OnnxSource, Field(discriminator="kind")]


class TargetSpec(_Strict):
    kind: TargetKind
    tolerance: dict[str, float | None] = Field(default_factory=dict)
    model: str | None = None  # default: <destination.model><suffix>
    # TensorRT: GPU types to build for, as compute capabilities like "8.6" (default: the local GPU).
    gpus: list[str] = Field(default_factory=list)
    # An optional target that fails or is rejected is reported but does not stop the others being
    # written (exit code 4 instead of 0).
    optional: bool = False

    @field_validator("tolerance")
    @classmethod
    def _tol(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        unknown = set(v) - set(Tolerance.model_fields)
        if unknown:
            raise ValueError(
                f"unknown tolerance {sorted(unknown)} (known: {', '.join(Tolerance.model_fields)})"
            )
        for k, x in v.items():
            if x is not None and x < 0:
                raise ValueError(f"{k} must be >= 0")
        return v

    def effective_tolerance(self, output_kind: OutputKind | str = OutputKind.scores) -> Tolerance:
        """The limits for one kind of output: the precision's defaults, then the recipe's overrides."""
        defaults = DEFAULT_TOLERANCES[self.kind.precision][OutputKind(output_kind).value]
        return Tolerance(**{**defaults, **self.tolerance})


class DimRange(_Strict):
    """Sizes a dynamic dimension is validated at; unset ones come from defaults (see accuracy.dim_ranges)."""

    min: int | None = Field(default=None, ge=1)
    typical: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _order(self) -> DimRange:
        given = [v for v in (self.min, self.typical, self.max) if v is not None]
        if given != sorted(given):
            raise ValueError(f"need min <= typical <= max, got {self.min}, {self.typical}, {self.max}")
        return self


class DataSpec(_Strict):
    data: str | None = None  # .npz with one array per input name
    samples: int = Field(default=64, ge=2, le=100_000)
    seed: int = 0
    # validation only: dynamic dimension name -> sizes the gate runs at (min, typical, max).
    dims: dict[str, DimRange] = Field(default_factory=dict)


class InstanceGroup(_Strict):
    kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"
    count: int = Field(default=1, ge=1, le=64)


class DynamicBatching(_Strict):
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    preferred_batch_size: list[int] = Field(default_factory=list)


class TritonSpec(_Strict):
    max_batch_size: int = Field(default=0, ge=0)
    dynamic_batching: DynamicBatching | None = None
    instance_group: InstanceGroup = InstanceGroup()
    warmup: bool = False
    # onnxruntime: production (platform onnxruntime_onnx); onnxruntime-python: the ONNX file
    # served by onnxruntime inside Triton's python backend (same inputs/outputs), for servers
    # built with the python backend only, like the local stack's.
    runtime: Literal["onnxruntime", "onnxruntime-python"] = "onnxruntime"


class Destination(_Strict):
    repository: str = "model_repos/default"
    model: str

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError(f"model name {v!r}: letters, digits, '_', '.', '-' only")
        return v


class SpeedSpec(_Strict):
    batches: list[int] = Field(default_factory=lambda: [1, 32])
    iterations: int = Field(default=200, ge=1)
    budget_s: float = Field(default=2.0, gt=0)  # per target and batch size: whichever ends first
    threads: int = Field(default=1, ge=1)  # one thread: comparable figures on a shared machine


class Recipe(_Strict):
    format_version: int = RECIPE_FORMAT_VERSION
    source: Source
    targets: list[TargetSpec]
    validation: DataSpec = DataSpec()
    calibration: DataSpec = DataSpec()
    triton: TritonSpec = TritonSpec()
    destination: Destination
    speed: SpeedSpec = SpeedSpec()

    # Set by load_recipe, not by the YAML.
    path: Path = Field(Path("<recipe>"), exclude=True)
    sha256: str = Field(default="", exclude=True)

    @field_validator("format_version")
    @classmethod
    def _fv(cls, v: int) -> int:
        if v != RECIPE_FORMAT_VERSION:
            raise ValueError(
                f"unsupported recipe format_version {v} (this tritonops reads {RECIPE_FORMAT_VERSION})"
            )
        return v

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        # "- onnx-fp16" is short for "- kind: onnx-fp16".
        if isinstance(v, list):
            return [{"kind": t} if isinstance(t, str) else t for t in v]
        return v

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if not self.targets:
            raise ValueError("targets: at least one target")
        names = [self.model_name(t) for t in self.targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"targets: two targets write the same model {sorted(dup)}")
        inputs = self.source.inputs or []
        if self.triton.max_batch_size > 0:
            for spec in inputs:
                if not isinstance(spec.shape[0], str):
                    raise ValueError(
                        f"source.inputs.{spec.name}.shape: triton.max_batch_size > 0 needs a dynamic "
                        f"first (batch) dimension, got {spec.shape[0]}"
                    )
        return self

    def model_name(self, target: TargetSpec) -> str:
        return target.model or f"{self.destination.model}{target.kind.model_suffix}"

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q)

    def repository_path(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        return self.resolve(self.destination.repository)


# pydantic puts a tagged union's tag in the error location: noise to a user.
_SOURCE_TAGS = ("torch", "sklearn", "onnx")


def parse_recipe(data: Any, path: Path) -> Recipe:
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConversionError(f"{path}: (top level): expected a mapping, got {got}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise ConversionError(format_validation_error(path, e, skip=_SOURCE_TAGS)) from None
    return recipe


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the field."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(f"{path}: recipe not found") from None
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror})") from None
    data = load_yaml(path, raw, ConversionError)
    recipe = parse_recipe(data, path)
    return recipe.model_copy(update={"path": path.resolve(), "sha256": hashlib.sha256(raw).hexdigest()})
