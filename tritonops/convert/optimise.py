"""Build each ONNX target from the fp32 graph: fp16, int8 dynamic, int8 static (QDQ)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tritonops.convert.export import Feeds
from tritonops.convert.recipe import TargetKind, TensorSpec
from tritonops.errors import ConversionError

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization and onnxconverter_common log advice on the root logger; keep stderr clean."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _cwd(folder: Path) -> Iterator[None]:
    """onnxruntime's symbolic shape inference saves sym_shape_infer_temp.onnx into the current
    directory when it fails: keep that out of the user's folder."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    # skl2onnx emits Cast(float -> float); the fp16 converter retypes its output but not its
    # ``to``, producing a graph onnxruntime refuses. A no-op Cast is an Identity.
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    for n in model.graph.node:
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to is not None and types.get(n.input[0]) == to:
                n.op_type = "Identity"
                del n.attribute[:]


def _fix_cast_targets(model: onnx.ModelProto) -> None:
    # The other half of the same converter bug: a Cast to float whose output became float16.
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output]}
    for n in g.node:
        if n.op_type == "Cast" and types.get(n.output[0]) == onnx.TensorProto.FLOAT16:
            for a in n.attribute:
                if a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                    a.i = onnx.TensorProto.FLOAT16


def to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    _drop_noop_casts(model)
    # keep_io_types: inputs/outputs stay fp32, so clients and the Triton config do not change.
    # Ops outside the default domain (ai.onnx.ml: Scaler, ArrayFeatureExtractor, trees) stay fp32.
    with _quiet():
        m16 = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST)
        )
    _fix_cast_targets(m16)
    onnx.save(m16, str(dst))
    return {"keep_io_types": True}


def to_int8_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) onnxruntime's u8 x s8 kernels
    # saturate their int16 intermediate sums: a 512-1024-1024-16 MLP measured 15% error without it,
    # 1.1% with it (onnxruntime 1.31 and 1.32, AMD EPYC with AVX2); on VNNI CPUs it costs a bit of range.
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False, reduce_range=True)
    return {"weight_type": "QInt8", "activations": "dynamic uint8", "reduce_range": True}


class _Reader:
    """onnxruntime's CalibrationDataReader over arrays, fed in small batches."""

    def __init__(self, data: Feeds, batch: int) -> None:
        n = len(next(iter(data.values())))
        self._batches = [{k: v[i : i + batch] for k, v in data.items()} for i in range(0, n, batch)]
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def to_int8_static(src: Path, dst: Path, calibration: Feeds, batch_dynamic: bool) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tritonops-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process = "symbolic"
        for skip_symbolic in (False, True):
            try:
                with _quiet(), _cwd(Path(tmp)):
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic)
                break
            except Exception as e:  # noqa: BLE001 - symbolic inference fails on ai.onnx.ml ops: retry without
                log.debug("quant_pre_process (skip_symbolic_shape=%s) failed: %s", skip_symbolic, e)
                pre_process = "onnx-shape-inference"
        else:
            # Pre-processing is an optimisation; quantising the raw graph is still correct.
            pre_process = "none"
            shutil.copyfile(src, pre)
        data = calibration if batch_dynamic else {k: v[:1] for k, v in calibration.items()}

        def quantise(model: Path) -> None:
            reader = _Reader(data, CALIBRATION_BATCH if batch_dynamic else 1)
            with _quiet():
                quantize_static(
                    str(model),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=True,  # see to_int8_dynamic: no saturation on AVX2-only CPUs
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )

        try:
            quantise(pre)
        except Exception as e:  # noqa: BLE001 - some pre-processed graphs (skl2onnx's) trip the quantiser
            if pre_process == "none":
                raise
            log.debug("quantize_static on the pre-processed graph failed (%s); using the raw graph", e)
            pre_process = "none"
            quantise(src)
    return {
        "format": "QDQ",
        "per_channel": True,
        "reduce_range": True,
        "calibration_samples": int(len(next(iter(calibration.values())))),
        "calibrate_method": "MinMax",
        "pre_process": pre_process,
    }


def load_npz(path: Path, specs: list[TensorSpec], field: str) -> Feeds:
    """Arrays for every input from an .npz, checked against the input spec (one clear error)."""
    if not path.is_file():
        raise ConversionError(f"{field}: {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{field}: {path}: not a readable .npz ({type(e).__name__}: {e})") from None
    out: Feeds = {}
    n: int | None = None
    for s in specs:
        if s.name not in data:
            raise ConversionError(f"{field}: {path}: no array for input {s.name!r} (has {sorted(data)})")
        a = data[s.name]
        if a.ndim != len(s.shape) or any(
            isinstance(d, int) and a.shape[i] != d for i, d in enumerate(s.shape)
        ):
            raise ConversionError(
                f"{field}: {path}: array {s.name!r} has shape {list(a.shape)}, the input spec is {s.shape}"
            )
        if n is not None and len(a) != n:
            raise ConversionError(
                f"{field}: {path}: arrays have different lengths ({n} and {len(a)} for {s.name!r})"
            )
        n = len(a)
        try:
            out[s.name] = np.ascontiguousarray(a.astype(s.dtype, casting="same_kind"))
        except TypeError:
            raise ConversionError(
                f"{field}: {path}: array {s.name!r} is {a.dtype}, cannot be used as {s.dtype}"
            ) from None
    return out


# Operators an onnxruntime-quantised graph holds where something was actually quantised.
QUANTISED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QGemm",
    }
)


def _nothing_to_quantise(kind: TargetKind, graph: Path) -> ConversionError:
    ops = sorted({n.op_type for n in onnx.load(str(graph)).graph.node})
    return ConversionError(
        f"target {kind.value}: no operator in the graph can be quantised to int8 "
        f"(it has {', '.join(ops)}); drop the target or mark it optional"
    )


def check_quantisable(kind: TargetKind, fp32: Path) -> None:
    """Before quantising: a graph with no ai.onnx operator at all (a tree ensemble: only ai.onnx.ml
    ops) makes the quantiser fail obscurely ("Failed to find proper ai.onnx domain")."""
    if not any(n.domain in ("", "ai.onnx") for n in onnx.load(str(fp32)).graph.node):
        raise _nothing_to_quantise(kind, fp32)


def require_quantised(kind: TargetKind, fp32: Path, dst: Path) -> None:
    """After quantising: a graph whose only handled ops were left alone is the fp32 graph under
    an int8 name; refused in one line."""
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    if not any(op in QUANTISED_OPS or op.startswith("QLinear") for op in ops):
        raise _nothing_to_quantise(kind, fp32)


def build_onnx_target(
    kind: TargetKind, fp32: Path, dst: Path, calibration: Feeds | None, batch_dynamic: bool
) -> dict[str, Any]:
    if kind is TargetKind.onnx:
        shutil.copyfile(fp32, dst)
        return {}
    if kind is TargetKind.onnx_fp16:
        return to_fp16(fp32, dst)
    check_quantisable(kind, fp32)
    if kind is TargetKind.onnx_int8_dynamic:
        info = to_int8_dynamic(fp32, dst)
    elif kind is TargetKind.onnx_int8_static:
        assert calibration is not None
        info = to_int8_static(fp32, dst, calibration, batch_dynamic)
    else:
        raise AssertionError(kind)
    require_quantised(kind, fp32, dst)
    return info
