"""Configs Triton rejects, each beside a near-identical one it accepts.

Every rejection quotes Triton's reason (triton-inference-server/core: model_config_utils.cc,
ensemble_scheduler/ensemble_utils.cc, model_repository_manager.cc, backend_model.cc; the
expected files of server/qa/L0_model_config). ``key`` is the part of tritonops' message that names
the same rule. A case is a repository: the model under test (``model``) and the models it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    models: dict[str, str]  # model name -> config.pbtxt text
    triton: str | None  # Triton's reason for rejecting; None: Triton loads it
    key: str = ""  # fragment of tritonops' message for the same rule
    model: str = "m"
    files: dict[str, str] = field(default_factory=dict)  # extra files: "model/1/x" -> text

    @property
    def rejected(self) -> bool:
        return self.triton is not None


PY_HEAD = (
    'name: "{name}"\nbackend: "python"\nmax_batch_size: {mbs}\nversion_policy {{ latest {{ num_versions: 1 }} }}\n'
)
IO = (
    'input [ {{ name: "INPUT0" data_type: {dt} dims: [ {dims} ] }} ]\n'
    'output [ {{ name: "OUTPUT0" data_type: {dt} dims: [ {dims} ] }} ]\n'
)


def py(name: str = "m", mbs: int = 8, body: str = "", dt: str = "TYPE_FP32", dims: str = "4", io: bool = True) -> str:
    return PY_HEAD.format(name=name, mbs=mbs) + (IO.format(dt=dt, dims=dims) if io else "") + body


CASES: list[Case] = []


def pair(id: str, rule: str, triton: str, key: str, bad: str, good: str, **kw: object) -> None:
    """A rejected config and the accepted one next to it."""
    extra = dict(kw.pop("others", {}))  # type: ignore[call-overload]
    CASES.append(Case(f"{id}-bad", rule, {"m": bad, **extra}, triton, key, **kw))  # type: ignore[arg-type]
    CASES.append(Case(f"{id}-ok", rule, {"m": good, **extra}, None, **kw))  # type: ignore[arg-type]


def ok(id: str, rule: str, text: str, **kw: object) -> None:
    extra = dict(kw.pop("others", {}))  # type: ignore[call-overload]
    CASES.append(Case(id, rule, {"m": text, **extra}, None, **kw))  # type: ignore[arg-type]


def io_cfg(mbs: int, inp: str, out: str = 'name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]', body: str = "") -> str:
    return PY_HEAD.format(name="m", mbs=mbs) + f"input [ {{ {inp} }} ]\noutput [ {{ {out} }} ]\n" + body


# --- reshape (ValidateIOShape) -------------------------------------------------------------------
DIFF = "has different size for dims and reshape"
NVAR = "has different number of variable-size dimensions for dims and reshape"
EMPTY = "cannot have empty reshape for non-batching model as scalar tensors are not supported"
RESHAPES = [
    # (id, dims, bad reshape, good reshape, Triton's reason)
    ("var-elementcount0", "2, 4, -1, 6", "8, -1, 2, 6", "8, -1, 1, 6", DIFF),
    ("var-elementcount1", "-1, 6", "-1, 4", "-1, 2, 3", DIFF),
    ("var-elementcount2", "3, -1", "2, -1", "3, -1", DIFF),
    ("var-elementcount3", "-1, 2, 2", "-1, 3", "-1, 4", DIFF),
    ("var-vs-fixed0", "-1, 4", "8", "-1, 2, 2", DIFF),
    ("var-vs-fixed1", "4", "-1", "2, 2", DIFF),
    ("var-vs-fixed2", "2, -1", "2, 3", "2, 1, -1", DIFF),
    ("var-count0", "-1, 4, -1", "-1, 4", "-1, 2, 2, -1", NVAR),
    ("var-count1", "-1, 2", "-1, -1, 2", "-1, 1, 2", NVAR),
    ("var-count2", "-1, -1", "-1", "-1, 1, -1", NVAR),
    ("var-count3", "4, -1, 3, -1", "4, -1, 3", "2, 2, -1, 3, -1", NVAR),
    ("var-count4", "-1", "-1, -1", "-1, 1", NVAR),
]


def reshaped(dims: str, shape: str) -> str:
    return f'name: "X0" data_type: TYPE_FP32 dims: [ {dims} ] reshape: {{ shape: [ {shape} ] }}'


for rid, dims, bad, good, why in RESHAPES:
    for kind in ("input", "output"):
        if kind == "input":
            b, g = io_cfg(8, reshaped(dims, bad)), io_cfg(8, reshaped(dims, good))
        else:
            b = io_cfg(8, 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]', reshaped(dims, bad))
            g = io_cfg(8, 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]', reshaped(dims, good))
        pair(f"reshape-{rid}-{kind}", "reshape", f"model {kind} 'X0' {why}", why, b, g)

for kind in ("input", "output"):
    scalar = 'name: "X0" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] }'
    plain = 'name: "X0" data_type: TYPE_FP32 dims: [ 1 ]'
    base = 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]'
    if kind == "input":
        pair(
            f"reshape-nobatch-empty-{kind}",
            "reshape",
            f"model {kind} 'X0' {EMPTY}",
            EMPTY.split(" as ")[0],
            io_cfg(0, scalar),
            io_cfg(0, plain),
        )
        pair(
            f"reshape-batch-empty-vs-nobatch-{kind}",
            "reshape",
            f"model {kind} 'X0' {EMPTY}",
            "empty reshape",
            io_cfg(0, scalar),
            io_cfg(4, scalar),
        )
    else:
        pair(
            f"reshape-nobatch-empty-{kind}",
            "reshape",
            f"model {kind} 'X0' {EMPTY}",
            EMPTY.split(" as ")[0],
            io_cfg(0, base, scalar),
            io_cfg(0, base, plain),
        )
        pair(
            f"reshape-batch-empty-vs-nobatch-{kind}",
            "reshape",
            f"model {kind} 'X0' {EMPTY}",
            "empty reshape",
            io_cfg(0, base, scalar),
            io_cfg(4, base, scalar),
        )
pair(
    "reshape-empty-dims2",
    "reshape",
    f"model input 'X0' {DIFF}",
    "has 1 elements",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ ] }'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] }'),
)
pair(
    "reshape-fixed-elementcount",
    "reshape",
    f"model input 'X0' {DIFF}",
    "has 9 elements",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 2, 3 ] reshape: { shape: [ 3, 3 ] }'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 2, 3 ] reshape: { shape: [ 3, 2 ] }'),
)
pair(
    "reshape-zero",
    "reshape",
    "model input 'X0' reshape dimensions must be integer >= 1, or -1",
    "reshape.shape: 0",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ 0, 2 ] }'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ 1, 2 ] }'),
)

# --- IO shape basics (ValidateIOShape, ValidateModelInput/Output) --------------------------------
pair(
    "io-dims-zero",
    "io",
    "model input 'X0' dimension must be integer >= 1, or -1",
    "dims: 0 is invalid",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 0 ]'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 1 ]'),
)
pair(
    "io-dims-minus2",
    "io",
    "model output 'X0' dimension must be integer >= 1, or -1",
    "dims: -2 is invalid",
    io_cfg(4, 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]', 'name: "X0" data_type: TYPE_FP32 dims: [ -2 ]'),
    io_cfg(4, 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]', 'name: "X0" data_type: TYPE_FP32 dims: [ -1 ]'),
)
pair(
    "io-no-dims",
    "io",
    "model input 'X0' must specify 'dims'",
    "dims: empty",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 1 ]'),
)
pair(
    "io-no-datatype",
    "io",
    "model input 'X0' must specify 'data_type'",
    "data_type: missing",
    io_cfg(4, 'name: "X0" dims: [ 4 ]'),
    io_cfg(4, 'name: "X0" data_type: TYPE_INT8 dims: [ 4 ]'),
)
pair(
    "io-nchw-dims",
    "io",
    "model input NHWC/NCHW require 3 dims",
    "require 3 dims",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224 ]'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ]'),
)
pair(
    "io-nhwc-dims",
    "io",
    "model input NHWC/NCHW require 3 dims",
    "require 3 dims",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 224, 224, 3, 1 ]'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 format: FORMAT_NHWC dims: [ 224, 224, 3 ]'),
)
pair(
    "io-shape-tensor-not-trt",
    "io",
    "shape tensors are only supported for TensorRT platform",
    "only supported for TensorRT",
    io_cfg(4, 'name: "X0" data_type: TYPE_INT32 dims: [ 2 ] is_shape_tensor: true'),
    io_cfg(4, 'name: "X0" data_type: TYPE_INT32 dims: [ 2 ]'),
)
pair(
    "io-shape-tensor-output-not-trt",
    "io",
    "shape tensors are only supported for TensorRT platform",
    "only supported for TensorRT",
    io_cfg(
        4,
        'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        'name: "X0" data_type: TYPE_INT32 dims: [ 2 ] is_shape_tensor: true',
    ),
    io_cfg(4, 'name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]', 'name: "X0" data_type: TYPE_INT32 dims: [ 2 ]'),
)
pair(
    "io-nonlinear-not-trt",
    "io",
    "Non-linear IO format is only supported for the TensorRT platform",
    "Non-linear IO format is only supported",
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] is_non_linear_format_io: true'),
    io_cfg(4, 'name: "X0" data_type: TYPE_FP32 dims: [ 3, 8, 8 ]'),
)
TRT = (
    'name: "m"\nplatform: "tensorrt_plan"\nmax_batch_size: 4\nversion_policy {{ latest {{ num_versions: 1 }} }}\n'
    'input [ {{ name: "X0" data_type: TYPE_FP32 dims: [ {dims} ] is_non_linear_format_io: true }} ]\n'
    'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n{body}'
)
pair(
    "io-nonlinear-trt-dims",
    "io",
    "Non-linear IO format input requires 3 dims",
    "requires 3 dims",
    TRT.format(dims="3, 8", body=""),
    TRT.format(dims="3, 8, 8", body=""),
    files={"m/1/model.plan": "x"},
)

# --- batch_input / batch_output (ValidateBatchIO) ------------------------------------------------
BI = 'batch_input [ {{ kind: {kind} target_name: "BI" data_type: {dt} source_input: [ {src} ] }} ]\n'
for kind in (
    "BATCH_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
    "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
    "BATCH_ITEM_SHAPE",
    "BATCH_ITEM_SHAPE_FLATTEN",
):
    short = kind.lower().replace("_", "-")
    good = py(body=BI.format(kind=kind, dt="TYPE_INT32", src='"INPUT0"'))
    pair(
        f"batch-input-less-source-{short}",
        "batch_input",
        f"batch input kind '{kind}' expects 1 source input, got 0",
        "expects 1 source input, got 0",
        py(body=BI.format(kind=kind, dt="TYPE_INT32", src="")),
        good,
    )
    pair(
        f"batch-input-many-source-{short}",
        "batch_input",
        f"batch input kind '{kind}' expects 1 source input, got 2",
        "expects 1 source input, got 2",
        py(body=BI.format(kind=kind, dt="TYPE_INT32", src='"INPUT0", "INPUT0"')),
        good,
    )
for dt in ("TYPE_INT64", "TYPE_FP16", "TYPE_UINT32"):
    pair(
        f"batch-input-dtype-{dt.lower()}",
        "batch_input",
        "batch input data type must be TYPE_INT32 or TYPE_FP32",
        "must be TYPE_INT32 or TYPE_FP32",
        py(body=BI.format(kind="BATCH_ELEMENT_COUNT", dt=dt, src='"INPUT0"')),
        py(body=BI.format(kind="BATCH_ELEMENT_COUNT", dt="TYPE_FP32", src='"INPUT0"')),
    )
pair(
    "batch-input-unknown-source",
    "batch_input",
    "unknown source input name 'INPUT1'",
    "unknown source input name",
    py(body=BI.format(kind="BATCH_ELEMENT_COUNT", dt="TYPE_INT32", src='"INPUT1"')),
    py(body=BI.format(kind="BATCH_ELEMENT_COUNT", dt="TYPE_INT32", src='"INPUT0"')),
)
pair(
    "batch-input-source-is-output",
    "batch_input",
    "unknown source input name 'OUTPUT0'",
    "unknown source input name",
    py(body=BI.format(kind="BATCH_ITEM_SHAPE", dt="TYPE_INT32", src='"OUTPUT0"')),
    py(body=BI.format(kind="BATCH_ITEM_SHAPE", dt="TYPE_INT32", src='"INPUT0"')),
)
BO = "batch_output [ {{ kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: [ {tgt} ] source_input: [ {src} ] }} ]\n"
BO_OK = py(body=BO.format(tgt='"OUTPUT0"', src='"INPUT0"'))
pair(
    "batch-output-less-source",
    "batch_output",
    "batch output kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got 0",
    "expects 1 source input, got 0",
    py(body=BO.format(tgt='"OUTPUT0"', src="")),
    BO_OK,
)
pair(
    "batch-output-many-source",
    "batch_output",
    "batch output kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got 2",
    "expects 1 source input, got 2",
    py(body=BO.format(tgt='"OUTPUT0"', src='"INPUT0", "INPUT0"')),
    BO_OK,
)
pair(
    "batch-output-unknown-source",
    "batch_output",
    "unknown source input name 'IN'",
    "unknown source input name",
    py(body=BO.format(tgt='"OUTPUT0"', src='"IN"')),
    BO_OK,
)
pair(
    "batch-output-unknown-target",
    "batch_output",
    "unknown target output name 'OUTPUT1'",
    "unknown target output name",
    py(body=BO.format(tgt='"OUTPUT1"', src='"INPUT0"')),
    BO_OK,
)
pair(
    "batch-output-target-is-input",
    "batch_output",
    "unknown target output name 'INPUT0'",
    "unknown target output name",
    py(body=BO.format(tgt='"INPUT0"', src='"INPUT0"')),
    BO_OK,
)
pair(
    "batch-output-duplicated-target",
    "batch_output",
    "target output name 'OUTPUT0' can only be specified once",
    "can only be specified once",
    py(body=BO.format(tgt='"OUTPUT0", "OUTPUT0"', src='"INPUT0"')),
    BO_OK,
)

# --- priorities and queue policies (ValidateModelConfig) -----------------------------------------
DB = "dynamic_batching {{ {db} }}\n"
PRIO = [
    (
        "default-priority-level0",
        "priority_levels: 3 default_priority_level: 0",
        "priority_levels: 3 default_priority_level: 1",
        "default priority level must be in range [1, 3]",
    ),
    (
        "default-priority-level1",
        "priority_levels: 3 default_priority_level: 4",
        "priority_levels: 3 default_priority_level: 3",
        "default priority level must be in range [1, 3]",
    ),
    (
        "default-priority-unset",
        "priority_levels: 2",
        "priority_levels: 2 default_priority_level: 2",
        "default priority level must be in range [1, 2]",
    ),
    (
        "priority-level0",
        "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 0 value: { max_queue_size: 4 } }",
        "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 1 value: { max_queue_size: 4 } }",
        "priority queue policy must have priority level in range [1, 2]",
    ),
    (
        "priority-level1",
        "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 3 value: { max_queue_size: 4 } }",
        "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 2 value: { max_queue_size: 4 } }",
        "priority queue policy must have priority level in range [1, 2]",
    ),
    (
        "preserve-ordering-levels",
        "preserve_ordering: true priority_levels: 2 default_priority_level: 1",
        "preserve_ordering: true priority_levels: 1 default_priority_level: 1",
        "Only one priority level is allowed when 'preserve_ordering' is true",
    ),
    (
        "preserve-ordering-delay",
        "preserve_ordering: true default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100 }",
        "preserve_ordering: true default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 100 }",
        "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true",
    ),
    (
        "preserve-ordering-delay-priority",
        "preserve_ordering: true priority_levels: 1 default_priority_level: 1 priority_queue_policy { key: 1 value: { timeout_action: DELAY default_timeout_microseconds: 100 } }",
        "preserve_ordering: true priority_levels: 1 default_priority_level: 1 priority_queue_policy { key: 1 value: { timeout_action: DELAY } }",
        "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true",
    ),
    (
        "preferred-size-zero",
        "preferred_batch_size: [ 0 ]",
        "preferred_batch_size: [ 4 ]",
        "dynamic batching preferred size must be positive",
    ),
    (
        "preferred-size-over-max",
        "preferred_batch_size: [ 16 ]",
        "preferred_batch_size: [ 8 ]",
        "dynamic batching preferred size must be <= max batch size",
    ),
]
for pid, bad, good, why in PRIO:
    key = "preferred_batch_size" if pid.startswith("preferred") else why.split(" [")[0].split(" when")[0]
    pair(f"dynamic-{pid}", "priority", f"{why} for m", key, py(body=DB.format(db=bad)), py(body=DB.format(db=good)))
ok(
    "dynamic-priority-no-levels",
    "priority",
    py(body=DB.format(db="priority_queue_policy { key: 7 value: { max_queue_size: 4 } }")),
)
ok(
    "dynamic-delay-without-ordering",
    "priority",
    py(body=DB.format(db="default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100 }")),
)


# --- sequence batching (the sequence-control getters) -------------------------------------------
def seq(controls: str, extra: str = "", mbs: int = 8) -> str:
    return py(mbs=mbs, body=f"sequence_batching {{ {extra} control_input [ {controls} ] }}\n")


START = '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }'
READY = '{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }'
SEQ = [
    (
        "control-tensor-multiple",
        '{ name: "C" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, { name: "C" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }',
        f"{START}, {READY}",
        "sequence batching control tensor 'C' is specified for multiple control kinds",
        "is specified for multiple control kinds",
    ),
    (
        "control-kind-start-multiple",
        f'{START}, {{ name: "START2" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }}',
        START,
        "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors",
        "multiple CONTROL_SEQUENCE_START",
    ),
    (
        "control-kind-end-multiple",
        '{ name: "E1" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] }, { name: "E2" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] }',
        '{ name: "E1" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] }',
        "sequence batching specifies multiple CONTROL_SEQUENCE_END tensors",
        "multiple CONTROL_SEQUENCE_END",
    ),
    (
        "control-kind-ready-multiple",
        f'{READY}, {{ name: "READY2" control [ {{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] }} ] }}',
        READY,
        "sequence batching specifies multiple CONTROL_SEQUENCE_READY tensors",
        "multiple CONTROL_SEQUENCE_READY",
    ),
    (
        "control-kind-twice-one-tensor",
        '{ name: "S" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }, { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }',
        '{ name: "S" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }',
        "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors",
        "multiple CONTROL_SEQUENCE_START",
    ),
    (
        "control-tensor-no-value",
        '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START } ] }',
        START,
        "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_START",
        "must specify either",
    ),
    (
        "control-tensor-two-values",
        '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] fp32_false_true: [ 0, 1 ] } ] }',
        START,
        "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' for CONTROL_SEQUENCE_START",
        "more than one from",
    ),
    (
        "control-tensor-int32-three",
        '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1, 2 ] } ] }',
        START,
        "sequence batching control 'int32_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_START",
        "'int32_false_true' must have exactly 2 entries",
    ),
    (
        "control-tensor-fp32-one",
        '{ name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 1 ] } ] }',
        '{ name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] }',
        "sequence batching control 'fp32_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_END",
        "'fp32_false_true' must have exactly 2 entries",
    ),
    (
        "control-tensor-bool-one",
        '{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ true ] } ] }',
        '{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] }',
        "sequence batching control 'bool_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_READY",
        "'bool_false_true' must have exactly 2 entries",
    ),
    (
        "control-no-name",
        "{ control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }",
        START,
        "sequence batching control tensor must have a name",
        "must have a name",
    ),
    (
        "corrid-values",
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 int32_false_true: [ 0, 1 ] } ] }',
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }',
        "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_CORRID",
        "must not specify either",
    ),
    (
        "corrid-fp32",
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] }',
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT64 } ] }',
        "unexpected data type for control CONTROL_SEQUENCE_CORRID. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING",
        "unexpected data type for control CONTROL_SEQUENCE_CORRID",
    ),
    (
        "corrid-no-type",
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID } ] }',
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }',
        "unexpected data type for control CONTROL_SEQUENCE_CORRID",
        "unexpected data type for control",
    ),
    (
        "corrid-multiple",
        '{ name: "C1" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT32 } ] }, { name: "C2" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT32 } ] }',
        '{ name: "C1" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT32 } ] }',
        "sequence batching specifies multiple CONTROL_SEQUENCE_CORRID tensors",
        "multiple CONTROL_SEQUENCE_CORRID",
    ),
]
for sid, bad, good, why, key in SEQ:
    pair(f"sequence-{sid}", "sequence_batching", f"{why} for m", key, seq(bad), seq(good))
pair(
    "sequence-oldest-preferred-zero",
    "sequence_batching",
    "sequence batching preferred batch size must be positive",
    "preferred batch size must be positive",
    seq(START, "oldest { preferred_batch_size: [ 0 ] }"),
    seq(START, "oldest { preferred_batch_size: [ 2 ] }"),
)
pair(
    "sequence-oldest-preferred-over-max",
    "sequence_batching",
    "sequence batching preferred batch size must be <= max batch size",
    "must be <= max batch size",
    seq(START, "oldest { preferred_batch_size: [ 9 ] }"),
    seq(START, "oldest { preferred_batch_size: [ 8 ] }"),
)
pair(
    "sequence-direct-utilization-high",
    "sequence_batching",
    "sequence batching minimum slot utilization must be in range (0.0, 1.0]",
    "minimum slot utilization",
    seq(START, "direct { minimum_slot_utilization: 1.5 }"),
    seq(START, "direct { minimum_slot_utilization: 1.0 }"),
)
pair(
    "sequence-direct-utilization-negative",
    "sequence_batching",
    "sequence batching minimum slot utilization must be in range (0.0, 1.0]",
    "minimum slot utilization",
    seq(START, "direct { minimum_slot_utilization: -0.5 }"),
    seq(START, "direct { minimum_slot_utilization: 0.5 }"),
)
pair(
    "sequence-response-cache",
    "sequence_batching",
    "Response Cache does not currently support model m with sequence batching scheduler. Please disable the response cache.",
    "Response Cache does not currently support",
    seq(START) + "response_cache { enable: true }\n",
    seq(START) + "response_cache { enable: false }\n",
)
pair(
    "dynamic-with-sequence",
    "sequence_batching",
    "dynamic batching and sequence batching cannot both be set (scheduler choice)",
    "another member of oneof",
    seq(START) + "dynamic_batching { }\n",
    seq(START),
)
ok("sequence-no-controls", "sequence_batching", py(body="sequence_batching { }\n"))

# --- decoupled, metrics, instance groups, platform ----------------------------------------------
pair(
    "decoupled-response-cache",
    "transaction_policy",
    "Response Cache does not currently support model m with 'decoupled' transaction policy. Please disable the response cache.",
    "'decoupled' transaction policy",
    py(body="model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }\n"),
    py(body="model_transaction_policy { decoupled: true }\n"),
)
MM = "model_metrics {{ metric_control [ {{ {mc} }} ] }}\n"
MMOK = 'metric_identifier { family: "nv_inference_first_response_histogram_ms" } histogram_options { buckets: [ 1, 10, 100 ] }'
pair(
    "metrics-no-identifier",
    "model_metrics",
    "metric control must specify 'metric_identifier'",
    "must specify 'metric_identifier'",
    py(body=MM.format(mc="histogram_options { buckets: [ 1, 10 ] }")),
    py(body=MM.format(mc=MMOK)),
)
pair(
    "metrics-empty-family",
    "model_metrics",
    "metric identifier must specify non-empty 'family'",
    "non-empty 'family'",
    py(body=MM.format(mc='metric_identifier { family: "" } histogram_options { buckets: [ 1 ] }')),
    py(body=MM.format(mc=MMOK)),
)
pair(
    "metrics-no-histogram",
    "model_metrics",
    "metric control must specify 'histogram_options'",
    "must specify 'histogram_options'",
    py(body=MM.format(mc='metric_identifier { family: "nv_inference_first_response_histogram_ms" }')),
    py(body=MM.format(mc=MMOK)),
)
pair(
    "metrics-empty-buckets",
    "model_metrics",
    "histogram options must specify non-empty 'buckets'",
    "non-empty 'buckets'",
    py(
        body=MM.format(
            mc='metric_identifier { family: "nv_inference_first_response_histogram_ms" } histogram_options { }'
        )
    ),
    py(body=MM.format(mc=MMOK)),
)
ok("metrics-empty-control-list", "model_metrics", py(body="model_metrics { }\n"))
pair(
    "instance-profile-not-trt",
    "instance_group",
    "specifies profile field which is only supported for TensorRT models",
    "only supported for TensorRT models",
    py(body='instance_group [ { kind: KIND_CPU count: 1 profile: [ "0" ] } ]\n'),
    py(body="instance_group [ { kind: KIND_CPU count: 1 } ]\n"),
)
TRT_IG = (
    'name: "m"\nplatform: "tensorrt_plan"\nmax_batch_size: 4\nversion_policy {{ latest {{ num_versions: 1 }} }}\n'
    'input [ {{ name: "X0" data_type: TYPE_FP32 dims: [ 4 ] }} ]\noutput [ {{ name: "Y0" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n'
    'instance_group [ {{ kind: KIND_GPU count: 1 gpus: [ 0 ] profile: [ "{p}" ] }} ]\n'
)
pair(
    "instance-profile-not-integer",
    "instance_group",
    "specifies invalid profile abc. The field should contain the string representation of a non-negative integer.",
    "specifies invalid profile",
    TRT_IG.format(p="abc"),
    TRT_IG.format(p="1"),
    files={"m/1/model.plan": "x"},
)
pair(
    "instance-cpu-gpus",
    "instance_group",
    "instance group m_0 of model m has kind KIND_CPU but specifies one or more GPUs",
    "only KIND_GPU uses gpus",
    py(body="instance_group [ { kind: KIND_CPU count: 1 gpus: [ 0 ] } ]\n"),
    py(body="instance_group [ { kind: KIND_CPU count: 1 } ]\n"),
)
pair(
    "instance-model-gpus",
    "instance_group",
    "instance group m_0 of model m has kind KIND_MODEL but specifies one or more GPUs",
    "only KIND_GPU uses gpus",
    py(body="instance_group [ { kind: KIND_MODEL gpus: [ 0 ] } ]\n"),
    py(body="instance_group [ { kind: KIND_MODEL } ]\n"),
)
pair(
    "negative-max-batch-size",
    "model",
    "'max_batch_size' must be non-negative value for m",
    "is negative",
    py(mbs=-1),
    py(mbs=0),
)
pair(
    "scheduling-on-non-ensemble",
    "ensemble",
    "ensemble scheduling cannot be set for model 'm' whose platform is not ensemble",
    "ensemble scheduling cannot be set",
    py(
        body='ensemble_scheduling { step [ { model_name: "a" input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }\n'
    ),
    py(),
)

# --- runtime (backend_model.cc) -----------------------------------------------------------------
pair(
    "runtime-escapes",
    "runtime",
    "backend library name '../libtriton_python.so' escapes backend directory '...', check model config runtime field",
    "escapes backend directory",
    py(body='runtime: "../libtriton_python.so"\n'),
    py(body='runtime: "libtriton_python.so"\n'),
)
pair(
    "runtime-python-model-py",
    "runtime",
    "unable to find Python backend based backend library 'model.py' for model 'm'",
    "unable to find Python backend based backend library",
    py(body='runtime: "model.py"\n'),
    py(body=""),
)
CASES.append(
    Case(
        "runtime-missing-library-bad",
        "runtime",
        {"m": py(body='runtime: "libcustom.so"\n')},
        "unable to find backend library 'libcustom.so' for model 'm', searched: ...",
        "unable to find backend library",
    )
)
ok("runtime-missing-library-ok", "runtime", py(body='runtime: "libcustom.so"\n'), files={"m/libcustom.so": "x"})
ok(
    "runtime-model-py-for-python-based-backend",
    "runtime",
    'name: "m"\nbackend: "mybackend"\nmax_batch_size: 0\nversion_policy { latest { num_versions: 1 } }\nruntime: "model.py"\n'
    'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
)

# --- false alarms tritonops used to raise --------------------------------------------------------
ok(
    "custom-backend-identity",
    "platform",
    'name: "m"\nbackend: "identity"\nmax_batch_size: 8\nversion_policy { latest { num_versions: 1 } }\n'
    'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\noutput [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n',
    files={"m/1/placeholder": "x"},
)
ok(
    "custom-backend-identity-nobatch",
    "platform",
    'name: "m"\nbackend: "identity"\nmax_batch_size: 0\nversion_policy { specific { versions: [ 1 ] } }\n'
    'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]\noutput [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]\n',
    files={"m/1/placeholder": "x"},
)
# qa/L0_model_config autofill_noplatform_success/custom/empty_config.identity: neither platform nor backend,
# no inputs or outputs; Triton takes the backend from the model's name (<name>.<backend>). (The version_policy
# line is tritonops' own rule, carried by every case here.)
CASES.append(
    Case(
        "custom-backend-from-model-name-empty-config",
        "platform",
        {"empty_config.identity": "version_policy { latest { num_versions: 1 } }\n"},
        None,
        model="empty_config.identity",
    )
)
CASES.append(
    Case(
        "custom-backend-no-delimiter-bad",
        "platform",
        {"no_delimiter": "version_policy { latest { num_versions: 1 } }\n"},
        "Invalid model name: Could not determine backend for model 'no_delimiter' with no backend in model "
        "configuration. Expected model name of the form 'model.<backend_name>'.",
        "not of the form <name>.<backend>",
        model="no_delimiter",
    )
)
ok("python-auto-complete-no-io", "platform", py(io=False, mbs=0))
ok("python-auto-complete-no-io-batching", "platform", py(io=False, mbs=4, body="dynamic_batching { }\n"))


# --- ensembles -----------------------------------------------------------------------------------
def step(model: str, ins: dict[str, str], outs: dict[str, str], version: int = -1) -> str:
    im = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in ins.items())
    om = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outs.items())
    return f'{{ model_name: "{model}" model_version: {version} {im} {om} }}'


def _braced(ios: str) -> str:
    return ios if ios.lstrip().startswith("{") else f"{{ {ios} }}"


def ens(
    steps: list[str],
    mbs: int = 8,
    ins: str = 'name: "IN" data_type: TYPE_FP32 dims: [ 4 ]',
    outs: str = 'name: "OUT" data_type: TYPE_FP32 dims: [ 4 ]',
    name: str = "m",
    body: str = "",
) -> str:
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {mbs}\nversion_policy {{ latest {{ num_versions: 1 }} }}\n'
        f"input [ {_braced(ins)} ]\noutput [ {_braced(outs)} ]\nensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n{body}"
    )


ADD = {"add": py("add", mbs=8)}  # INPUT0 FP32 [4] -> OUTPUT0 FP32 [4]
S1 = step("add", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})
E_OK = ens([S1])


def epair(
    id: str, triton: str, key: str, bad: str, good: str = E_OK, others: dict[str, str] | None = None, **kw: object
) -> None:
    pair(f"ensemble-{id}", "ensemble", triton, key, bad, good, others={**ADD, **(others or {})}, **kw)


epair(
    "no-input-map",
    "must specify 'input_map' in step 0 of ensemble 'm'",
    "must specify 'input_map'",
    ens([step("add", {}, {"OUTPUT0": "OUT"})]),
)
epair(
    "no-output-map",
    "must specify 'output_map' in step 0 of ensemble 'm'",
    "must specify 'output_map'",
    ens([step("add", {"INPUT0": "IN"}, {})]),
)
epair(
    "output-to-tensor-overmapped",
    "ensemble tensor 'OUT' can appear in an output map only once for ensemble 'm' step 1",
    "can appear in an output map only once",
    ens([S1, S1]),
)
epair(
    "unused-input",
    "ensemble input 'IN2' for ensemble m' is not used",
    "is not used",
    ens([S1], ins='{ name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "IN2" data_type: TYPE_FP32 dims: [ 4 ] }'),
)
epair(
    "unused-output",
    "ensemble output 'OUT2' for ensemble m' is not used",
    "is not used",
    ens(
        [S1], outs='{ name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUT2" data_type: TYPE_FP32 dims: [ 4 ] }'
    ),
)
epair(
    "unreachable-output",
    "output 'OUT' for ensemble 'm' is not written: at least one of its depending tensors, 'T', is not connected",
    "is not written",
    ens([step("add", {"INPUT0": "T"}, {"OUTPUT0": "OUT"}), step("add", {"INPUT0": "OUT"}, {"OUTPUT0": "T"})]),
    ens([step("add", {"INPUT0": "IN"}, {"OUTPUT0": "T"}), step("add", {"INPUT0": "T"}, {"OUTPUT0": "OUT"})]),
)
epair(
    "redundant-tensor-as-output",
    "ensemble tensor 'EXTRA' is unused in ensemble 'm'",
    "is unused in ensemble",
    ens([S1, step("add", {"INPUT0": "IN"}, {"OUTPUT0": "EXTRA"})]),
)
epair(
    "instance-group-set",
    "instance group should not be specified for ensemble 'm'",
    "an ensemble has no instances",
    ens([S1], body="instance_group [ { kind: KIND_CPU } ]\n"),
)
epair(
    "optimization-set",
    "optimization should not be specified for ensemble 'm'",
    "optimization should not be specified",
    ens([S1], body="optimization { input_pinned_memory { enable: false } }\n"),
)
epair(
    "model-warmup-set",
    "model_warmup can not be specified for ensemble 'm'",
    "model_warmup can not be specified",
    ens(
        [S1],
        body='model_warmup [ { name: "w" batch_size: 1 inputs { key: "IN" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n',
    ),
)
epair(
    "no-step",
    "must specify 'step' for ensemble 'm'",
    "needs at least one step",
    'name: "m"\nplatform: "ensemble"\nmax_batch_size: 8\nversion_policy { latest { num_versions: 1 } }\n'
    'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
)
epair(
    "non-existing-model",
    "ensemble 'm' depends on 'missing' which has no loaded version",
    "is not in the repository",
    ens([step("missing", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
)
epair(
    "invalid-batch-size",
    "ensemble m allows maximum batch size 16, but it contains model add which only allows maximum batch size to be 8",
    "only allows maximum batch size",
    ens([S1], mbs=16),
    ens([S1], mbs=8),
)
# Triton compares dims first: a non-batching step's [4] matches a batching ensemble's [4].
ok(
    "ensemble-nobatch-step-in-batching-ensemble",
    "ensemble",
    ens([step("add0", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    others={**ADD, "add0": py("add0", mbs=0)},
)
epair(
    "nobatch-step-full-shape",
    "(accepted: non-batching step shape [-1,4] equals the batching ensemble's full shape)",
    "inconsistent shape",
    ens([step("addv", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})], mbs=8),
    ens(
        [step("addv", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        mbs=8,
        ins='name: "IN" data_type: TYPE_FP32 dims: [ 4 ]',
        outs='name: "OUT" data_type: TYPE_FP32 dims: [ 4 ]',
    ),
    others={"addv": py("addv", mbs=0, dims="-1, 4")},
)
# The "bad" of the pair above is not bad: addv's [-1, 4] matches [-1, 4]. Replace it with a real mismatch.
CASES[-2] = Case(
    "ensemble-nobatch-step-full-shape-bad",
    "ensemble",
    {
        "m": ens(
            [step("addv", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
            mbs=8,
            ins='name: "IN" data_type: TYPE_FP32 dims: [ 5 ]',
        ),
        **ADD,
        "addv": py("addv", mbs=0, dims="-1, 4"),
    },
    "ensemble tensor IN: inconsistent shape: [-1,5] is inferred from model m while [-1,4] is inferred from model addv",
    "inconsistent shape",
)
epair(
    "inconsistent-data-type",
    "ensemble tensor IN: inconsistent data type: TYPE_INT32 is inferred from model m while TYPE_FP32 is inferred from model add",
    "inconsistent data type",
    ens([S1], ins='name: "IN" data_type: TYPE_INT32 dims: [ 4 ]'),
)
epair(
    "inconsistent-data-type-between-steps",
    "ensemble tensor T: inconsistent data type: TYPE_FP32 is inferred from model add while TYPE_INT32 is inferred from model addi",
    "inconsistent data type",
    ens(
        [step("add", {"INPUT0": "IN"}, {"OUTPUT0": "T"}), step("addi", {"INPUT0": "T"}, {"OUTPUT0": "OUT"})],
        outs='name: "OUT" data_type: TYPE_INT32 dims: [ 4 ]',
    ),
    ens([step("add", {"INPUT0": "IN"}, {"OUTPUT0": "T"}), step("add", {"INPUT0": "T"}, {"OUTPUT0": "OUT"})]),
    others={"addi": py("addi", dt="TYPE_INT32")},
)
epair(
    "inconsistent-shape",
    "ensemble tensor OUT: inconsistent shape: [-1,3] is inferred from model m while [-1,4] is inferred from model add",
    "inconsistent shape",
    ens([S1], outs='name: "OUT" data_type: TYPE_FP32 dims: [ 3 ]'),
)
epair(
    "inconsistent-shape-between-steps",
    "ensemble tensor T: inconsistent shape: [-1,4] is inferred from model add while [-1,3] is inferred from model add3",
    "inconsistent shape",
    ens(
        [step("add", {"INPUT0": "IN"}, {"OUTPUT0": "T"}), step("add3", {"INPUT0": "T"}, {"OUTPUT0": "OUT"})],
        outs='name: "OUT" data_type: TYPE_FP32 dims: [ 3 ]',
    ),
    ens(
        [step("add", {"INPUT0": "IN"}, {"OUTPUT0": "T"}), step("addw", {"INPUT0": "T"}, {"OUTPUT0": "OUT"})],
        outs='name: "OUT" data_type: TYPE_FP32 dims: [ -1 ]',
    ),
    others={"add3": py("add3", dims="3"), "addw": py("addw", dims="-1")},
)
epair(
    "ensemble-reshape-used",
    "ensemble tensor IN: inconsistent shape (the ensemble's reshape is its tensor's shape)",
    "inconsistent shape",
    ens([S1], ins='name: "IN" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] }'),
    ens([S1], ins='name: "IN" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] }'),
)
epair(
    "invalid-input-map",
    "in ensemble m, ensemble tensor IN is mapping to non-existing input INPUT1 in model add",
    "mapping to non-existing input",
    ens([step("add", {"INPUT0": "IN", "INPUT1": "IN"}, {"OUTPUT0": "OUT"})]),
)
epair(
    "invalid-output-map",
    "in ensemble m, ensemble tensor OUT is mapped from non-existing output OUTPUT1 in model add",
    "mapped from non-existing output",
    ens([step("add", {"INPUT0": "IN"}, {"OUTPUT1": "OUT"})]),
)
epair(
    "unmapped-input",
    "in ensemble m, input INPUT1 in model add2 is not mapped to any ensemble tensors",
    "is not mapped to any ensemble tensors",
    ens([step("add2", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    ens([step("add2", {"INPUT0": "IN", "INPUT1": "IN"}, {"OUTPUT0": "OUT"})]),
    others={
        "add2": PY_HEAD.format(name="add2", mbs=8)
        + 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        + 'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    },
)
epair(
    "optional-input",
    "in ensemble m, input INPUT1 in model add2 is not mapped to any ensemble tensors",
    "is not mapped to any ensemble tensors",
    ens([step("add2", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    ens([step("add2o", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    others={
        "add2": PY_HEAD.format(name="add2", mbs=8)
        + 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        + 'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
        "add2o": PY_HEAD.format(name="add2o", mbs=8)
        + 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]\n'
        + 'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n',
    },
)
REPEAT = py("repeat", mbs=0, dims="-1", body="model_transaction_policy { decoupled: true }\n")
TWO_IN = (
    PY_HEAD.format(name="pair", mbs=0)
    + 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    + 'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
)
V = 'name: "IN" data_type: TYPE_FP32 dims: [ -1 ]'
VO = 'name: "OUT" data_type: TYPE_FP32 dims: [ -1 ]'
epair(
    "invalid-decoupled-branching",
    "in ensemble m, step of model 'pair' receives inputs originated from different decoupled models",
    "originated from different decoupled models",
    ens(
        [
            step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "R1"}),
            step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "R2"}),
            step("pair", {"INPUT0": "R1", "INPUT1": "R2"}, {"OUTPUT0": "OUT"}),
        ],
        mbs=0,
        ins=V,
        outs=VO,
    ),
    ens(
        [
            step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "R1"}),
            step("pair", {"INPUT0": "R1", "INPUT1": "R1"}, {"OUTPUT0": "OUT"}),
        ],
        mbs=0,
        ins=V,
        outs=VO,
    ),
    others={"repeat": REPEAT, "pair": TWO_IN},
)
epair(
    "invalid-decoupled-branching-2",
    "in ensemble m, step of model 'pair' receives inputs originated from different decoupled models",
    "originated from different decoupled models",
    ens(
        [
            step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "R1"}),
            step("pair", {"INPUT0": "R1", "INPUT1": "IN"}, {"OUTPUT0": "OUT"}),
        ],
        mbs=0,
        ins=V,
        outs=VO,
    ),
    ens(
        [
            step("identityf", {"INPUT0": "IN"}, {"OUTPUT0": "R1"}),
            step("pair", {"INPUT0": "R1", "INPUT1": "IN"}, {"OUTPUT0": "OUT"}),
        ],
        mbs=0,
        ins=V,
        outs=VO,
    ),
    others={"repeat": REPEAT, "pair": TWO_IN, "identityf": py("identityf", mbs=0, dims="-1")},
)
epair(
    "decoupled-outputs-from-two",
    "in ensemble m, step of model 'm' receives inputs originated from different decoupled models",
    "originated from different decoupled models",
    ens(
        [step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}), step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "OUT2"})],
        mbs=0,
        ins=V,
        outs=f'{{ {VO} }}, {{ name: "OUT2" data_type: TYPE_FP32 dims: [ -1 ] }}',
    ),
    ens([step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})], mbs=0, ins=V, outs=VO),
    others={"repeat": REPEAT},
)
epair(
    "no-required-version",
    "ensemble 'm' depends on 'add' whose required version 2 is not loaded",
    "whose required version 2 is not loaded",
    ens([step("add", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}, version=2)]),
    ens([step("add", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}, version=1)]),
)
epair(
    "no-required-version-policy",
    "ensemble 'm' depends on 'addp' whose required version 1 is not loaded",
    "whose required version 1 is not loaded",
    ens([step("addp", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}, version=1)]),
    ens([step("addp", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}, version=2)]),
    others={"addp": py("addp").replace("num_versions: 1", "num_versions: 1")},
    files={"addp/2/model.py": "x"},
)
epair(
    "circular-dependency",
    "circular dependency between ensembles: m -> ... -> m2 -> m",
    "circular dependency between ensembles",
    ens([step("m2", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    ens([step("m3", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    others={
        "m2": ens(
            [step("m", {"IN": "INPUT0"}, {"OUT": "OUTPUT0"})],
            name="m2",
            ins='name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
            outs='name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        ),
        "m3": ens(
            [step("add", {"INPUT0": "INPUT0"}, {"OUTPUT0": "OUTPUT0"})],
            name="m3",
            ins='name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
            outs='name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        ),
    },
)
epair(
    "circular-dependency-3",
    "circular dependency between ensembles: m -> ... -> c3 -> m",
    "circular dependency between ensembles",
    ens([step("c2", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    ens([step("c3", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    others={
        "c2": ens(
            [step("c3", {"INPUT0": "INPUT0"}, {"OUTPUT0": "OUTPUT0"})],
            name="c2",
            ins='name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
            outs='name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        ),
        "c3": ens(
            [step("add", {"INPUT0": "INPUT0"}, {"OUTPUT0": "OUTPUT0"})],
            name="c3",
            ins='name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
            outs='name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        ),
    },
)
# The bad c3 closes the loop back to m.
CASES[-2] = Case(
    CASES[-2].id,
    "ensemble",
    {
        **CASES[-2].models,
        "c3": ens(
            [step("m", {"IN": "INPUT0"}, {"OUT": "OUTPUT0"})],
            name="c3",
            ins='name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
            outs='name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ]',
        ),
    },
    CASES[-2].triton,
    CASES[-2].key,
)
epair(
    "self-circular-dependency",
    "circular dependency between ensembles: m -> m",
    "refers to itself",
    ens([step("m", {"IN": "IN"}, {"OUT": "OUT"})]),
)
ok(
    "ensemble-step-auto-complete",
    "ensemble",
    ens([step("auto", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})]),
    others={"auto": py("auto", io=False)},
)
ok(
    "ensemble-nobatch-ensemble-batching-step",
    "ensemble",
    ens(
        [S1],
        mbs=0,
        ins='name: "IN" data_type: TYPE_FP32 dims: [ -1, 4 ]',
        outs='name: "OUT" data_type: TYPE_FP32 dims: [ -1, 4 ]',
    ),
    others=ADD,
)
ok(
    "ensemble-decoupled-chain",
    "ensemble",
    ens(
        [step("repeat", {"INPUT0": "IN"}, {"OUTPUT0": "R1"}), step("identityf", {"INPUT0": "R1"}, {"OUTPUT0": "OUT"})],
        mbs=0,
        ins=V,
        outs=VO,
    ),
    others={"repeat": REPEAT, "identityf": py("identityf", mbs=0, dims="-1")},
)
