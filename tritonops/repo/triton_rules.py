"""Triton's own rules for one config, beyond its schema, as Triton's core applies them at load.

Each rule is a small function named after the C++ check it follows (triton-inference-server/core,
src/model_config_utils.cc: ValidateIOShape, ValidateModelInput/Output, ValidateBatchIO,
ValidateModelConfig, the sequence-control getters, ValidateModelMetrics, ValidateInstanceGroup;
src/backend_model.cc for ``runtime``). Messages start with the field and carry Triton's reason, so
a user can search Triton's source or forum for it. Rules that need the other models of the
repository (ensemble data flow) are in ensemble_rules.

Only what the repository decides is checked: rules that depend on the server (which GPUs exist,
which backends are installed) are not.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from tritonops.repo import ensemble_rules
from tritonops.repo.model_config import backend_of
from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.rule_finding import Finding, name_pattern

WILDCARD = -1
STAGING_PREFIX = ".tritonops-"  # validate.STAGING_PREFIX, which imports this module
SeqCtl = mc.ModelSequenceBatching.Control
BOOLEAN_CONTROLS = (SeqCtl.CONTROL_SEQUENCE_START, SeqCtl.CONTROL_SEQUENCE_END, SeqCtl.CONTROL_SEQUENCE_READY)
CORRID_TYPES = (mc.TYPE_UINT64, mc.TYPE_INT64, mc.TYPE_UINT32, mc.TYPE_INT32, mc.TYPE_STRING)
# A runtime of model.py names a backend written in python (backends/<backend>/model.py).
PYTHON_RUNTIME = "model.py"


def check(
    cfg: mc.ModelConfig,
    config_path: Path,
    *,
    version_dirs: Iterable[Path] = (),
    load_config: Callable[[str], mc.ModelConfig | None] | None = None,
) -> list[Finding]:
    """Every Triton rule one config breaks; ``load_config(name)`` reads another model's config."""
    model_dir = config_path.parent
    out: list[Finding] = []
    for rule in CONFIG_RULES:
        out.extend(rule(cfg))
    out.extend(runtime_rule(cfg, model_dir, list(version_dirs)))
    if cfg.platform == "ensemble" or cfg.HasField("ensemble_scheduling"):
        out.extend(ensemble_rules.check(cfg, repository_root(model_dir), load_config))
    return out


def repository_root(model_dir: Path) -> Path:
    """The repository a model folder belongs to; `repo add` validates inside a staging folder in it."""
    root = model_dir.parent
    return root.parent if root.name.startswith(STAGING_PREFIX) else root


# --- inputs and outputs (ValidateIOShape, ValidateModelInput/Output) ---------------------------


def _ios(cfg: mc.ModelConfig) -> Iterator[tuple[str, mc.ModelInput | mc.ModelOutput]]:
    for io in cfg.input:
        yield "input", io
    for io in cfg.output:
        yield "output", io


def element_count(dims: Sequence[int]) -> int:
    """Triton's GetElementCount: -1 if any dim is variable, 0 for no dims."""
    if any(d == WILDCARD for d in dims):
        return WILDCARD
    n = 0
    for i, d in enumerate(dims):
        n = d if i == 0 else n * d
    return n


def _segments(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs between variable dims: [2, 4, -1, 6] -> [8, 6]."""
    out, cur = [], 1
    for d in dims:
        if d == WILDCARD:
            out.append(cur)
            cur = 1
        else:
            cur *= d
    out.append(cur)
    return out


def empty_reshape_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    for kind, io in _ios(cfg):
        if io.name and io.HasField("reshape") and not io.reshape.shape and cfg.max_batch_size == 0:
            yield Finding(
                f"{kind} {io.name!r}.reshape: cannot have empty reshape for non-batching model as "
                "scalar tensors are not supported (use dims: [ 1 ] without reshape)",
                name_pattern(io.name),
            )


def variable_reshape_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    """dims and reshape with -1: same variable dims, same element count between them."""
    for kind, io in _ios(cfg):
        if not io.name or not io.HasField("reshape"):
            continue
        dims, shape = list(io.dims), list(io.reshape.shape)
        if any(d < 1 and d != WILDCARD for d in [*dims, *shape]):
            continue  # reported as an invalid dimension
        if WILDCARD not in dims and WILDCARD not in shape:
            continue  # fixed sizes: compared in validate.check_config
        field = f"{kind} {io.name!r}.reshape"
        ds, rs = element_count(dims), element_count(shape)
        if ds != rs and (rs != 0 or ds != 1):
            yield Finding(f"{field}: has different size for dims and reshape", name_pattern(io.name))
            continue
        a, b = _segments(dims), _segments(shape)
        if len(a) != len(b):
            yield Finding(
                f"{field}: has different number of variable-size dimensions for dims and reshape ({dims} vs {shape})",
                name_pattern(io.name),
            )
        elif a != b:
            yield Finding(
                f"{field}: has different size for dims and reshape (between variable dims "
                f"{dims} has {a} elements, {shape} has {b})",
                name_pattern(io.name),
            )


def io_format_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    trt = cfg.platform == "tensorrt_plan" or cfg.backend == "tensorrt"
    for kind, io in _ios(cfg):
        if not io.name:
            continue
        pat = name_pattern(io.name)
        if (
            kind == "input"
            and isinstance(io, mc.ModelInput)
            and io.format in (mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NCHW)
            and len(io.dims) != 3
        ):
            yield Finding(f"input {io.name!r}.format: model input NHWC/NCHW require 3 dims", pat)
        if io.is_shape_tensor and not trt:
            yield Finding(
                f"{kind} {io.name!r}.is_shape_tensor: shape tensors are only supported for TensorRT platform",
                pat,
            )
        if io.is_non_linear_format_io:
            if not trt:
                yield Finding(
                    f"{kind} {io.name!r}.is_non_linear_format_io: Non-linear IO format is only "
                    "supported for the TensorRT platform",
                    pat,
                )
            elif len(io.dims) != 3:
                yield Finding(f"{kind} {io.name!r}: Non-linear IO format {kind} requires 3 dims", pat)


# --- batch_input / batch_output (ValidateBatchIO) ----------------------------------------------


def batch_input_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    inputs = {io.name for io in cfg.input}
    for i, b in enumerate(cfg.batch_input):
        field = f"batch_input[{i}]"
        kind = mc.BatchInput.Kind.Name(b.kind)
        if len(b.source_input) != 1:
            yield Finding(
                f"{field}.source_input: batch input kind '{kind}' expects 1 source input, got {len(b.source_input)}",
                r"^\s*batch_input",
            )
        if b.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
            yield Finding(
                f"{field}.data_type: batch input data type must be TYPE_INT32 or TYPE_FP32", r"^\s*batch_input"
            )
        for s in b.source_input:
            if s not in inputs:
                yield Finding(f"{field}.source_input: unknown source input name '{s}'", name_pattern(s))


def batch_output_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    inputs = {io.name for io in cfg.input}
    outputs = {io.name for io in cfg.output}
    for i, b in enumerate(cfg.batch_output):
        field = f"batch_output[{i}]"
        if len(b.source_input) != 1:
            kind = mc.BatchOutput.Kind.Name(b.kind)
            yield Finding(
                f"{field}.source_input: batch output kind '{kind}' expects 1 source input, got {len(b.source_input)}",
                r"^\s*batch_output",
            )
        for s in b.source_input:
            if s not in inputs:
                yield Finding(f"{field}.source_input: unknown source input name '{s}'", name_pattern(s))
        seen: set[str] = set()
        for t in b.target_name:
            if t not in outputs:
                yield Finding(f"{field}.target_name: unknown target output name '{t}'", name_pattern(t))
            if t in seen:
                yield Finding(
                    f"{field}.target_name: target output name '{t}' can only be specified once", name_pattern(t)
                )
            seen.add(t)


# --- dynamic batching: priorities and queue policies ---------------------------------------------


def priority_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    if not cfg.HasField("dynamic_batching"):
        return
    db = cfg.dynamic_batching
    levels = db.priority_levels
    if levels != 0:
        if db.default_priority_level == 0 or db.default_priority_level > levels:
            yield Finding(
                f"dynamic_batching.default_priority_level: {db.default_priority_level}: default priority "
                f"level must be in range [1, {levels}]",
                r"default_priority_level|priority_levels",
            )
        for level in sorted(db.priority_queue_policy):
            if level == 0 or level > levels:
                yield Finding(
                    f"dynamic_batching.priority_queue_policy: key {level}: priority queue policy must have "
                    f"priority level in range [1, {levels}]",
                    r"priority_queue_policy",
                )
    if not db.preserve_ordering:
        return
    if levels > 1:
        yield Finding(
            "dynamic_batching.preserve_ordering: Only one priority level is allowed when 'preserve_ordering' is true",
            r"preserve_ordering",
        )
    policies = [("default_queue_policy", db.default_queue_policy)] + [
        (f"priority_queue_policy[{k}]", db.priority_queue_policy[k]) for k in sorted(db.priority_queue_policy)
    ]
    for where, p in policies:
        if p.default_timeout_microseconds != 0 and p.timeout_action == mc.ModelQueuePolicy.DELAY:
            yield Finding(
                f"dynamic_batching.{where}.timeout_action: Queue policy can not have DELAY as timeout "
                "action when 'preserve_ordering' is true",
                r"timeout_action",
            )


# --- sequence batching (GetBooleanSequenceControlProperties, GetTypedSequenceControlProperties) --


def sequence_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    if not cfg.HasField("sequence_batching"):
        return
    sb = cfg.sequence_batching
    if cfg.response_cache.enable:
        yield Finding(
            "response_cache: Response Cache does not currently support model with sequence batching "
            "scheduler. Please disable the response cache.",
            r"response_cache",
        )
    yield from _control_names(sb)
    for kind in BOOLEAN_CONTROLS:
        yield from _boolean_control(sb, kind)
    yield from _corrid_control(sb)
    if sb.HasField("oldest"):
        for p in sb.oldest.preferred_batch_size:
            if p <= 0:
                yield Finding(
                    f"sequence_batching.oldest.preferred_batch_size: {p}: sequence batching preferred batch "
                    "size must be positive",
                    r"preferred_batch_size",
                )
            elif p > cfg.max_batch_size:
                yield Finding(
                    f"sequence_batching.oldest.preferred_batch_size: {p}: sequence batching preferred batch "
                    f"size must be <= max batch size ({cfg.max_batch_size})",
                    r"preferred_batch_size",
                )
    if sb.HasField("direct"):
        u = sb.direct.minimum_slot_utilization
        if u < 0.0 or u > 1.0:
            yield Finding(
                f"sequence_batching.direct.minimum_slot_utilization: {u}: sequence batching minimum slot "
                "utilization must be in range (0.0, 1.0]",
                r"minimum_slot_utilization",
            )


def _control_names(sb: mc.ModelSequenceBatching) -> Iterator[Finding]:
    seen: set[str] = set()
    for ci in sb.control_input:
        if not ci.name:
            yield Finding(
                "sequence_batching.control_input.name: sequence batching control tensor must have a name",
                r"control_input",
            )
        elif ci.name in seen:
            yield Finding(
                f"sequence_batching.control_input: sequence batching control tensor '{ci.name}' is specified "
                "for multiple control kinds",
                name_pattern(ci.name),
            )
        seen.add(ci.name)


def _controls_of(sb: mc.ModelSequenceBatching, kind: int) -> list[tuple[str, mc.ModelSequenceBatching.Control]]:
    return [(ci.name, c) for ci in sb.control_input for c in ci.control if c.kind == kind]


def _boolean_control(sb: mc.ModelSequenceBatching, kind: int) -> Iterator[Finding]:
    kname = SeqCtl.Kind.Name(kind)
    controls = _controls_of(sb, kind)
    if len(controls) > 1:
        yield Finding(f"sequence_batching.control_input: sequence batching specifies multiple {kname} tensors", kname)
    for name, c in controls:
        given = [
            f
            for f, n in (
                ("int32_false_true", len(c.int32_false_true)),
                ("fp32_false_true", len(c.fp32_false_true)),
                ("bool_false_true", len(c.bool_false_true)),
            )
            if n
        ]
        pat = name_pattern(name) if name else kname
        if not given:
            yield Finding(
                f"sequence_batching.control_input {name!r}: sequence batching must specify either "
                f"'int32_false_true', 'fp32_false_true' or 'bool_false_true' for {kname}",
                pat,
            )
        elif len(given) > 1:
            yield Finding(
                f"sequence_batching.control_input {name!r}: sequence batching specifies more than one from "
                f"'int32_false_true', 'fp32_false_true' and 'bool_false_true' for {kname}",
                pat,
            )
        elif len(getattr(c, given[0])) != 2:
            yield Finding(
                f"sequence_batching.control_input {name!r}: sequence batching control '{given[0]}' must have "
                f"exactly 2 entries for {kname}",
                pat,
            )


def _corrid_control(sb: mc.ModelSequenceBatching) -> Iterator[Finding]:
    kname = "CONTROL_SEQUENCE_CORRID"
    controls = _controls_of(sb, SeqCtl.CONTROL_SEQUENCE_CORRID)
    if len(controls) > 1:
        yield Finding(f"sequence_batching.control_input: sequence batching specifies multiple {kname} tensors", kname)
    for name, c in controls:
        pat = name_pattern(name) if name else kname
        if c.int32_false_true or c.fp32_false_true or c.bool_false_true:
            yield Finding(
                f"sequence_batching.control_input {name!r}: sequence batching must not specify either "
                f"'int32_false_true', 'fp32_false_true' or 'bool_false_true' for {kname}",
                pat,
            )
        elif c.data_type not in CORRID_TYPES:
            yield Finding(
                f"sequence_batching.control_input {name!r}.data_type: unexpected data type for control "
                f"{kname}. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and "
                "TYPE_STRING",
                pat,
            )


# --- the rest of ValidateModelConfig / ValidateInstanceGroup --------------------------------------


def decoupled_cache_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    if cfg.model_transaction_policy.decoupled and cfg.response_cache.enable:
        yield Finding(
            "response_cache: Response Cache does not currently support model with 'decoupled' transaction "
            "policy. Please disable the response cache.",
            r"response_cache",
        )


def model_metrics_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    if not cfg.HasField("model_metrics"):
        return
    for i, m in enumerate(cfg.model_metrics.metric_control):
        field = f"model_metrics.metric_control[{i}]"
        if not m.HasField("metric_identifier"):
            yield Finding(f"{field}: metric control must specify 'metric_identifier'", r"metric_control")
        elif not m.metric_identifier.family:
            yield Finding(
                f"{field}.metric_identifier: metric identifier must specify non-empty 'family'",
                r"metric_identifier",
            )
        if not m.HasField("histogram_options"):
            yield Finding(f"{field}: metric control must specify 'histogram_options'", r"metric_control")
        elif not m.histogram_options.buckets:
            yield Finding(
                f"{field}.histogram_options: histogram options must specify non-empty 'buckets'",
                r"histogram_options",
            )


def ensemble_fields_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    """ValidateEnsembleSchedulingConfig's checks on the ensemble's own fields."""
    if cfg.HasField("ensemble_scheduling") and cfg.platform != "ensemble":
        yield Finding(
            f"ensemble_scheduling: ensemble scheduling cannot be set for model whose platform is not "
            f"ensemble (platform {cfg.platform!r})",
            r"ensemble_scheduling",
        )
    if cfg.platform != "ensemble":
        return
    if cfg.HasField("optimization"):
        yield Finding("optimization: optimization should not be specified for ensemble", r"^\s*optimization")
    if cfg.model_warmup:
        yield Finding("model_warmup: model_warmup can not be specified for ensemble", r"^\s*model_warmup")


def instance_profile_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    trt = cfg.platform == "tensorrt_plan"
    for i, g in enumerate(cfg.instance_group):
        if g.profile and not trt:
            yield Finding(
                f"instance_group[{i}].profile: specifies profile field which is only supported for TensorRT models",
                r"\bprofile:",
            )
        elif trt:
            for p in g.profile:
                if not p.isdigit():
                    yield Finding(
                        f"instance_group[{i}].profile: specifies invalid profile {p}. The field should contain "
                        "the string representation of a non-negative integer.",
                        r"\bprofile:",
                    )


def runtime_rule(cfg: mc.ModelConfig, model_dir: Path, version_dirs: list[Path]) -> Iterator[Finding]:
    """backend_model.cc: the runtime names a library found in the model or the backend's folder."""
    rt = cfg.runtime
    if not rt or cfg.platform == "ensemble":
        return
    norm = posixpath.normpath(rt)
    if rt.startswith("/") or norm == ".." or norm.startswith("../"):
        yield Finding(
            f"runtime: backend library name '{rt}' escapes backend directory, check model config runtime field",
            r"^\s*runtime:",
        )
        return
    backend = backend_of(cfg)
    if rt == PYTHON_RUNTIME:
        if backend == "python":
            # A python-based backend's model.py lives in backends/<backend>/; python itself has none.
            yield Finding(
                "runtime: unable to find Python backend based backend library 'model.py' for a model of "
                "backend 'python' (the python backend is a C++ library: leave runtime empty or use "
                "'libtriton_python.so')",
                r"^\s*runtime:",
            )
        return
    if rt == f"libtriton_{backend}.so":
        return
    places = [model_dir, *version_dirs]
    if not any((p / rt).is_file() for p in places):
        yield Finding(
            f"runtime: unable to find backend library '{rt}' for backend {backend!r}: not in the model "
            f"folder or a version folder, and not the backend's own libtriton_{backend}.so",
            r"^\s*runtime:",
        )


CONFIG_RULES: tuple[Callable[[mc.ModelConfig], Iterable[Finding]], ...] = (
    empty_reshape_rule,
    variable_reshape_rule,
    io_format_rule,
    batch_input_rule,
    batch_output_rule,
    priority_rule,
    sequence_rule,
    decoupled_cache_rule,
    model_metrics_rule,
    ensemble_fields_rule,
    instance_profile_rule,
)
