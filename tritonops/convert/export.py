"""Export a recipe's source to an fp32 ONNX graph, and keep a way to run the source itself.

The source runner is what every target is compared with: the PyTorch module, the scikit-learn
estimator, or (for an ONNX source) the original file on onnxruntime.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tritonops.convert.recipe import OnnxSource, Recipe, SklearnSource, TensorSpec, TorchSource
from tritonops.errors import ConversionError

log = logging.getLogger(__name__)

# Example batch for tracing: never 1 (a batch of 1 silently makes the batch dimension static),
# other dynamic dimensions get a different size so the tracer cannot confuse them with it.
EXAMPLE_BATCH = 2
EXAMPLE_OTHER_DIM = 7
CHECK_BATCH = 3

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], dict[str, np.ndarray]]

_ONNX_TO_NUMPY: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass
class TensorInfo:
    """An input or output of an exported graph: dims are ints, or names for dynamic dims."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class Exported:
    path: Path  # the fp32 ONNX file
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    run_source: Runner
    info: dict[str, Any] = field(default_factory=dict)  # exporter, opset, tool versions


def graph_io(model: onnx.ModelProto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    init = {i.name for i in model.graph.initializer}

    def conv(vi: onnx.ValueInfoProto) -> TensorInfo:
        tt = vi.type.tensor_type
        dtype = _ONNX_TO_NUMPY.get(tt.elem_type)
        if dtype is None:
            raise ConversionError(
                f"graph {'input' if vi in model.graph.input else 'output'} {vi.name!r}: element type "
                f"{onnx.TensorProto.DataType.Name(tt.elem_type)} is not supported by Triton here"
            )
        shape: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            shape.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or f"d{i}"))
        return TensorInfo(vi.name, dtype, shape)

    return [conv(i) for i in model.graph.input if i.name not in init], [conv(o) for o in model.graph.output]


def tool_versions() -> dict[str, str]:
    out = {"onnx": onnx.__version__}
    for mod in ("onnxruntime", "torch", "onnxscript", "sklearn", "skl2onnx", "onnxconverter_common"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "?"))
    return out


def _load_factory(recipe: Recipe, ref: str, field_name: str) -> Callable[[], Any]:
    mod_name, func_name = ref.split(":")
    beside = recipe.path.parent / (mod_name.replace(".", "/") + ".py")
    try:
        if beside.is_file():
            # A private module name: two recipes' "model.py" must not shadow each other.
            unique = f"_tritonops_recipe_{abs(hash(str(beside)))}_{mod_name.replace('.', '_')}"
            spec = importlib.util.spec_from_file_location(unique, beside)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name) and not beside.is_file():
            raise ConversionError(
                f"{recipe.path}: {field_name}: module {mod_name!r} not found "
                f"({beside.name} is not beside the recipe and it is not importable)"
            ) from None
        raise ConversionError(f"{recipe.path}: {field_name}: importing {mod_name!r} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - user code: any failure becomes one line naming it
        raise ConversionError(
            f"{recipe.path}: {field_name}: importing {mod_name!r} failed: {type(e).__name__}: {e}"
        ) from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConversionError(
            f"{recipe.path}: {field_name}: module {mod_name!r} has no function {func_name!r}"
        )
    return fn


def _call_factory(recipe: Recipe, ref: str, field_name: str) -> Any:
    fn = _load_factory(recipe, ref, field_name)
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        raise ConversionError(
            f"{recipe.path}: {field_name}: {ref}() failed: {type(e).__name__}: {e}"
        ) from None


def random_values(s: TensorSpec, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values for input ``s`` in its [low, high] (integers inclusive; booleans either)."""
    if s.dtype.startswith("float"):
        return rng.uniform(s.low, s.high, size=shape).astype(s.dtype)
    if s.dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(int(s.low), int(s.high) + 1, size=shape).astype(s.dtype)


def example_feeds(specs: list[TensorSpec], batch: int, seed: int = 0) -> Feeds:
    rng = np.random.default_rng(seed)
    return {s.name: random_values(s, rng, s.concrete_shape(batch, EXAMPLE_OTHER_DIM)) for s in specs}


def check_dynamic_dims(model: onnx.ModelProto, specs: list[TensorSpec], where: str) -> list[str]:
    """Dims asked to be dynamic that the exported graph made static (a known silent failure)."""
    inputs, _ = graph_io(model)
    by_name = {t.name: t for t in inputs}
    problems = []
    for s in specs:
        t = by_name.get(s.name)
        if t is None:
            problems.append(f"{where}: input {s.name!r} missing from the graph (has {sorted(by_name)})")
            continue
        if len(t.shape) != len(s.shape):
            problems.append(
                f"{where}: input {s.name!r} has rank {len(t.shape)}, the recipe says {len(s.shape)}"
            )
            continue
        for i, d in s.dynamic_dims.items():
            if isinstance(t.shape[i], int):
                problems.append(f"{where}: input {s.name!r} dim {i} ({d}) exported as static {t.shape[i]}")
    return problems


def _ort_session(path: Path | bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(
        str(path) if isinstance(path, Path) else path, so, providers=["CPUExecutionProvider"]
    )


def ort_runner(path: Path, threads: int = 1) -> Runner:
    sess = _ort_session(path, threads)
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, feeds), strict=True))

    return run


def _batch_check(path: Path, specs: list[TensorSpec], where: str) -> None:
    """Run the graph at a batch it was not traced with: catches sizes baked into Reshapes."""
    if not any(0 in s.dynamic_dims for s in specs):
        return
    try:
        ort_runner(path)(example_feeds(specs, CHECK_BATCH, seed=1))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(
            f"{where}: the exported graph fails at batch {CHECK_BATCH}: {str(e).splitlines()[0]}"
        ) from None


# ----------------------------------------------------------------------------------------------- torch


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _root_cause(e: BaseException) -> str:
    """The innermost cause, one line: the dynamo exporter wraps the real reason in generic steps."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = _ANSI.sub("", str(e)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx logs advice ("torchvision is not installed ...") through handlers torch bound to
    stderr at import time, and prints to stdout; what matters (failures) is raised and reported."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    # The TorchScript exporter dumps its IR graph to file descriptor 1 on failure: that would
    # corrupt `-o json` on stdout. The failure itself is raised and reported.
    sys.stdout.flush()
    saved_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(devnull)
        logging.disable(previous)


def _export_torch(recipe: Recipe, src: TorchSource, out: Path) -> Exported:
    import torch

    where = f"{recipe.path}: source"
    module = _torch_module(recipe, src, where)
    feeds = example_feeds(src.inputs, EXAMPLE_BATCH)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in src.inputs)
    _check_torch_outputs(module, args, feeds, src, where)
    info: dict[str, Any] = {"source": "torch", "factory": src.factory, "opset": src.opset}
    info.update(_export_torch_graph(module, args, src, out, where))
    names = [s.name for s in src.inputs]

    def run(f: Feeds) -> dict[str, np.ndarray]:
        with torch.no_grad():
            y = _as_list(module(*(torch.from_numpy(np.ascontiguousarray(f[n])) for n in names)))
        return {o: t.detach().numpy() for o, t in zip(src.outputs, y, strict=True)}

    return _finish(out, run, info)


def _as_list(y: Any) -> list[Any]:
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _torch_module(recipe: Recipe, src: TorchSource, where: str) -> Any:
    """The recipe's factory's module, in eval mode."""
    import torch

    module = _call_factory(recipe, src.factory, "source.factory")
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(
            f"{where}.factory: {src.factory}() returned {type(module).__name__}, not a torch.nn.Module"
        )
    module.eval()
    return module


def _check_torch_outputs(module: Any, args: tuple[Any, ...], feeds: Feeds, src: TorchSource, where: str) -> None:
    """Run the module once on the example inputs: it accepts them and returns the outputs named."""
    import torch

    try:
        with torch.no_grad():
            ys = _as_list(module(*args))
    except Exception as e:  # noqa: BLE001 - the user's spec does not fit the model
        shapes = ", ".join(f"{s.name}={list(feeds[s.name].shape)} {s.dtype}" for s in src.inputs)
        raise ConversionError(
            f"{where}.inputs: the model rejects inputs {shapes}: {str(e).splitlines()[0]}"
        ) from None
    if len(ys) != len(src.outputs):
        raise ConversionError(
            f"{where}.outputs: the model returns {len(ys)} outputs, the recipe names {len(src.outputs)}"
        )


def _export_torch_graph(module: Any, args: tuple[Any, ...], src: TorchSource, out: Path, where: str) -> dict[str, Any]:
    """Write ``out`` with the dynamo exporter, else the TorchScript one; the first whose graph keeps
    the dynamic dims and runs at another batch wins. Returns the exporter used (and why not the first)."""
    info: dict[str, Any] = {}
    problems: list[str] = []
    for exporter in ("dynamo", "torchscript"):
        try:
            with _quiet_exporter():
                if exporter == "dynamo":
                    _export_dynamo(module, args, src, out)
                else:
                    _export_torchscript(module, args, src, out)
            model = onnx.load(str(out))
            bad = check_dynamic_dims(model, src.inputs, f"{exporter} exporter")
            if bad:
                problems += bad
                log.debug("%s", "; ".join(bad))
                continue
            _batch_check(out, src.inputs, f"{where} ({exporter} exporter)")
            info["exporter"] = exporter
            break
        except ConversionError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - try the other exporter, then report both
            problems.append(f"{exporter} exporter: {_root_cause(e)}")
            log.debug("%s exporter failed: %s", exporter, problems[-1])
    else:
        out.unlink(missing_ok=True)
        raise ConversionError(f"{where}: export failed: {' | '.join(problems)}")
    if problems:
        info["fallback_reason"] = " | ".join(problems)
        log.warning("%s: %s; used the %s exporter", where, info["fallback_reason"], info["exporter"])
    return info


def _export_dynamo(module: Any, args: tuple[Any, ...], src: TorchSource, out: Path) -> None:
    import torch

    # Positional, not keyed by our input names: torch.export matches dict keys against forward()'s
    # parameter names, which the recipe does not know. One Dim object per name, so inputs sharing
    # "batch" share the dimension.
    syms: dict[str, Any] = {}
    dims = tuple(
        {i: syms.setdefault(d, torch.export.Dim(d, min=1)) for i, d in s.dynamic_dims.items()} or None
        for s in src.inputs
    )
    prog = torch.onnx.export(
        module,
        args,
        None,
        input_names=[s.name for s in src.inputs],
        output_names=list(src.outputs),
        dynamo=True,
        dynamic_shapes=dims,
        opset_version=src.opset,
        verbose=False,
    )
    assert prog is not None
    prog.save(str(out), external_data=False)


def _export_torchscript(module: Any, args: tuple[Any, ...], src: TorchSource, out: Path) -> None:
    import torch

    axes = {s.name: dict(s.dynamic_dims) for s in src.inputs}
    axes.update({o: {0: "batch"} for o in src.outputs} if any(0 in s.dynamic_dims for s in src.inputs) else {})
    torch.onnx.export(
        module,
        args,
        str(out),
        input_names=[s.name for s in src.inputs],
        output_names=list(src.outputs),
        dynamo=False,
        dynamic_axes=axes,
        opset_version=src.opset,
    )


# --------------------------------------------------------------------------------------------- sklearn


def _export_sklearn(recipe: Recipe, src: SklearnSource, out: Path) -> Exported:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    where = f"{recipe.path}: source"
    if src.factory:
        est = _call_factory(recipe, src.factory, "source.factory")
    else:
        import joblib

        p = recipe.resolve(src.path or "")
        if not p.is_file():
            raise ConversionError(f"{where}.path: {p} not found")
        try:
            est = joblib.load(p)
        except Exception as e:  # noqa: BLE001
            raise ConversionError(
                f"{where}.path: {p}: cannot load the estimator: {type(e).__name__}: {e}"
            ) from None
    if not hasattr(est, "predict"):
        raise ConversionError(f"{where}: {type(est).__name__} is not a scikit-learn estimator (no predict)")
    spec = src.inputs[0]
    feeds = example_feeds(src.inputs, EXAMPLE_BATCH)
    is_classifier = hasattr(est, "predict_proba")
    try:
        est.predict(feeds[spec.name])
    except Exception as e:  # noqa: BLE001
        raise ConversionError(
            f"{where}.inputs: the estimator rejects inputs "
            f"{spec.name}={list(feeds[spec.name].shape)} {spec.dtype}: {str(e).splitlines()[0]}"
        ) from None
    ttype = {"float32": FloatTensorType, "float64": DoubleTensorType, "int64": Int64TensorType}.get(
        spec.dtype
    )
    if ttype is None:
        raise ConversionError(
            f"{where}.inputs.{spec.name}.dtype: {spec.dtype} is not supported for scikit-learn"
        )
    shape = [None if isinstance(d, str) else d for d in spec.shape]
    # ZipMap turns probabilities into a list of dicts, which Triton cannot serve.
    options = {id(est): {"zipmap": False}} if is_classifier else None
    try:
        model = to_onnx(
            est, initial_types=[(spec.name, ttype(shape))], options=options, target_opset=src.opset
        )
    except Exception as e:  # noqa: BLE001 - skl2onnx raises many types for unsupported estimators/ops
        raise ConversionError(
            f"{where}: skl2onnx cannot convert {type(est).__name__}: {str(e).splitlines()[0]}"
        ) from None
    # skl2onnx names dynamic dims "None"-less; give the recipe's names so the check below is meaningful.
    for vi in model.graph.input:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if i in spec.dynamic_dims and not d.HasField("dim_value"):
                d.dim_param = spec.dynamic_dims[i]
    bad = check_dynamic_dims(model, src.inputs, "skl2onnx")
    if bad:
        raise ConversionError(f"{where}: {'; '.join(bad)}")
    onnx.save(model, str(out))
    _batch_check(out, src.inputs, where)
    out_names = [o.name for o in model.graph.output]

    def run(f: Feeds) -> dict[str, np.ndarray]:
        x = f[spec.name]
        if is_classifier:
            label = np.asarray(est.predict(x))
            return {out_names[0]: label, out_names[1]: np.asarray(est.predict_proba(x), dtype=np.float32)}
        y = np.asarray(est.predict(x), dtype=np.float32)
        return {out_names[0]: y.reshape(len(x), -1)}

    info = {
        "source": "sklearn",
        "estimator": type(est).__name__,
        "opset": src.opset,
        "exporter": "skl2onnx",
        "zipmap": False,
    }
    return _finish(out, run, info)


# ------------------------------------------------------------------------------------------------ onnx


def _export_onnx(recipe: Recipe, src: OnnxSource, out: Path) -> Exported:
    p = recipe.resolve(src.path)
    if not p.is_file():
        raise ConversionError(f"{recipe.path}: source.path: {p} not found")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # noqa: BLE001
        raise ConversionError(
            f"{recipe.path}: source.path: {p}: invalid ONNX: {str(e).splitlines()[0]}"
        ) from None
    if src.inputs:
        bad = check_dynamic_dims(model, src.inputs, "onnx source")
        if bad:
            raise ConversionError(f"{recipe.path}: source.inputs: {'; '.join(bad)}")
    onnx.save(model, str(out))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return _finish(
        out, ort_runner(p), {"source": "onnx", "file": str(p), "opset": opset, "exporter": "shape-inference"}
    )


def _finish(out: Path, run: Runner, info: dict[str, Any]) -> Exported:
    model = onnx.load(str(out))
    inputs, outputs = graph_io(model)
    info["tools"] = tool_versions()
    return Exported(out, inputs, outputs, run, info)


def export(recipe: Recipe, out: Path) -> Exported:
    """Export the recipe's source to ``out`` (fp32 ONNX) and return how to run the source."""
    src = recipe.source
    if isinstance(src, TorchSource):
        return _export_torch(recipe, src, out)
    if isinstance(src, SklearnSource):
        return _export_sklearn(recipe, src, out)
    assert isinstance(src, OnnxSource)
    return _export_onnx(recipe, src, out)


def input_specs(recipe: Recipe, exported: Exported) -> list[TensorSpec]:
    """The recipe's input specs, or specs read from the graph for an ONNX source without any."""
    if recipe.source.inputs:
        return list(recipe.source.inputs)
    return [TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in exported.inputs]
