"""Config checks: what Triton would reject, or silently misread, in one model's config.pbtxt and the
model file its version folders hold (an ONNX graph must agree with the config).

Every problem names the file, the line where one is known, and the field. The checks follow Triton's
own (model_config_utils.cc, the backends' auto-complete/validation); :mod:`tritonops.repo.validate`
runs them over a repository with its files, manifests and index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from tritonops.errors import RepositoryError
from tritonops.repo import triton_rules
from tritonops.repo.model_config import PLATFORM_BACKEND, backend_of, line_of
from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.rule_finding import Problem

VERSION_RE = re.compile(r"^[1-9][0-9]*$")

# backend -> default model file name (Triton's defaults).
DEFAULT_MODEL_FILENAME = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
    "tensorflow": "model.savedmodel",
    "python": "model.py",
    "openvino": "model.xml",
}
PLATFORM_DEFAULT_FILENAME = {"tensorflow_graphdef": "model.graphdef"}

# ONNX TensorProto element type -> Triton data type.
ONNX_TO_TRITON = {
    1: mc.TYPE_FP32,
    2: mc.TYPE_UINT8,
    3: mc.TYPE_INT8,
    4: mc.TYPE_UINT16,
    5: mc.TYPE_INT16,
    6: mc.TYPE_INT32,
    7: mc.TYPE_INT64,
    8: mc.TYPE_STRING,
    9: mc.TYPE_BOOL,
    10: mc.TYPE_FP16,
    11: mc.TYPE_FP64,
    12: mc.TYPE_UINT32,
    13: mc.TYPE_UINT64,
    16: mc.TYPE_BF16,
}


def dtype_name(t: int) -> str:
    return str(mc.DataType.Name(t)) if t in mc.DataType.values() else str(t)


def expected_model_filename(cfg: mc.ModelConfig) -> str | None:
    """The file Triton looks for in each version folder; None for ensembles (no files)."""
    if cfg.platform == "ensemble":
        return None
    if cfg.default_model_filename:
        return cfg.default_model_filename
    if cfg.platform in PLATFORM_DEFAULT_FILENAME:
        return PLATFORM_DEFAULT_FILENAME[cfg.platform]
    return DEFAULT_MODEL_FILENAME.get(backend_of(cfg))


class _Ctx:
    """Collects problems for one config file, finding lines in its text."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = str(path)
        self.text = text
        self.problems: list[Problem] = []

    def add(self, message: str, pattern: str | None = None, start: int = 1) -> None:
        line = line_of(self.text, pattern, start) if pattern and self.text else None
        self.problems.append(Problem(self.path, message, line))

    def line_of_name(self, name: str) -> int:
        return line_of(self.text, rf'name:\s*"{re.escape(name)}"') or 1


def check_config(
    cfg: mc.ModelConfig,
    config_path: Path,
    text: str = "",
    *,
    model_name: str | None = None,
    version_dirs: Iterable[Path] = (),
    known_models: set[str] | None = None,
) -> list[Problem]:
    """Config-level checks; ``version_dirs`` are checked for the expected model file (and ONNX graph)."""
    c = _Ctx(config_path, text)
    version_dirs = list(version_dirs)  # read by several steps
    _check_name(c, cfg, model_name)
    cfg = _with_named_backend(cfg, model_name)
    _check_backend(c, cfg)
    if cfg.max_batch_size < 0:
        c.add(f"max_batch_size: {cfg.max_batch_size} is negative", r"^\s*max_batch_size:")
    _check_inputs_outputs(c, cfg)
    _check_instance_groups(c, cfg)
    _check_version_policy(c, cfg, config_path, version_dirs)
    _check_batching(c, cfg)
    if cfg.platform == "ensemble":
        _check_ensemble(c, cfg, model_name, known_models)
    for f in triton_rules.check(cfg, config_path, version_dirs=version_dirs):
        c.add(f.message, f.pattern)
    _check_version_files(c, cfg, version_dirs)
    return c.problems


def _check_name(c: _Ctx, cfg: mc.ModelConfig, model_name: str | None) -> None:
    if model_name is not None and cfg.name and cfg.name != model_name:
        c.add(
            f"name: {cfg.name!r} differs from the model folder {model_name!r} (Triton refuses to load it)",
            r"^\s*name:",
        )


def _with_named_backend(cfg: mc.ModelConfig, model_name: str | None) -> mc.ModelConfig:
    """Triton's rule for a config naming neither platform nor backend: a model named
    ``<name>.<backend>`` runs on that backend (qa/L0_model_config custom/empty_config.identity)."""
    if cfg.platform or cfg.backend or not model_name or "." not in model_name.strip("."):
        return cfg
    named = mc.ModelConfig()
    named.CopyFrom(cfg)
    named.backend = model_name.rsplit(".", 1)[1]
    return named


def _check_backend(c: _Ctx, cfg: mc.ModelConfig) -> None:
    if not cfg.platform and not cfg.backend:
        c.add(
            "platform/backend: neither is set, and the model's name is not of the form <name>.<backend> "
            "(Triton cannot tell which backend runs the model)"
        )
    elif cfg.platform and cfg.platform not in PLATFORM_BACKEND:
        c.add(
            f"platform: unknown {cfg.platform!r} (known: {', '.join(sorted(PLATFORM_BACKEND))})",
            r"^\s*platform:",
        )
    elif cfg.platform and cfg.backend and PLATFORM_BACKEND[cfg.platform] != cfg.backend:
        c.add(f"backend: {cfg.backend!r} does not match platform {cfg.platform!r}", r"^\s*backend:")
    # A custom backend (e.g. identity) needs no default_model_filename: the backend finds its files.


def _check_inputs_outputs(c: _Ctx, cfg: mc.ModelConfig) -> None:
    for kind, ios in (("input", cfg.input), ("output", cfg.output)):
        # python and custom backends complete (or need no) inputs and outputs themselves.
        if not ios and cfg.platform != "ensemble" and backend_of(cfg) in DEFAULT_MODEL_FILENAME.keys() - {"python"}:
            c.add(f"{kind}: none declared")
        seen: set[str] = set()
        for i, io in enumerate(ios):
            if not io.name:
                c.add(f"{kind}[{i}].name: empty", rf"^\s*{kind}")
                continue
            if io.name in seen:
                line_pat = rf'name:\s*"{re.escape(io.name)}"'
                c.add(f"{kind} {io.name!r}: duplicate {kind} name", line_pat, c.line_of_name(io.name) + 1)
            seen.add(io.name)
            _check_tensor(c, io, kind)


def _check_tensor(c: _Ctx, io: mc.ModelInput | mc.ModelOutput, kind: str) -> None:
    """One named input or output: its data type, dims and reshape."""
    line_pat = rf'name:\s*"{re.escape(io.name)}"'
    field = f"{kind} {io.name!r}"
    if io.data_type == mc.TYPE_INVALID:
        c.add(f"{field}.data_type: missing or TYPE_INVALID", line_pat)
    if not io.dims:
        c.add(
            f"{field}.dims: empty (use dims: [ 1 ] with reshape: {{ shape: [ ] }} for a scalar)",
            line_pat,
        )
    for d in io.dims:
        if d == 0 or d < -1:
            c.add(f"{field}.dims: {d} is invalid (a dimension is > 0, or -1 for variable)", line_pat)
    if io.HasField("reshape"):
        for d in io.reshape.shape:
            if d == 0 or d < -1:
                c.add(f"{field}.reshape.shape: {d} is invalid", line_pat)
        if all(d > 0 for d in io.dims) and all(d > 0 for d in io.reshape.shape):
            a, b = _prod(io.dims), _prod(io.reshape.shape)
            if a != b:
                c.add(
                    f"{field}.reshape: {list(io.reshape.shape)} has {b} elements, "
                    f"dims {list(io.dims)} has {a}",
                    line_pat,
                )


def _check_instance_groups(c: _Ctx, cfg: mc.ModelConfig) -> None:
    for i, g in enumerate(cfg.instance_group):
        field = f"instance_group[{i}]"
        if g.count < 0:
            c.add(f"{field}.count: {g.count} is negative", r"\bcount:")
        if g.kind in (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_MODEL) and g.gpus:
            c.add(
                f"{field}.gpus: set for {mc.ModelInstanceGroup.Kind.Name(g.kind)} (only KIND_GPU uses gpus)",
                r"\bgpus:",
            )
        if any(x < 0 for x in g.gpus):
            c.add(f"{field}.gpus: negative GPU id", r"\bgpus:")
        if cfg.platform == "ensemble":
            c.add(f"{field}: an ensemble has no instances", r"^\s*instance_group")


def _check_version_policy(
    c: _Ctx, cfg: mc.ModelConfig, config_path: Path, version_dirs: list[Path]
) -> None:
    """tritonops always writes the policy explicitly; a ``specific`` one names existing folders."""
    vp = cfg.version_policy
    which = vp.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    if which is None:
        c.add("version_policy: not set (Triton would load the highest numbered folder, whatever it holds)")
    elif which == "latest" and vp.latest.num_versions < 1:
        c.add(f"version_policy.latest.num_versions: {vp.latest.num_versions} (must be >= 1)", r"num_versions")
    elif which == "specific":
        if not vp.specific.versions:
            c.add("version_policy.specific.versions: empty (no version would load)", r"specific")
        present = {int(p.name) for p in version_dirs if VERSION_RE.match(p.name)}
        for v in vp.specific.versions:
            if v <= 0:
                c.add(f"version_policy.specific.versions: {v} is not a version number", r"versions")
            elif v not in present:
                c.add(
                    f"version_policy.specific.versions: version {v} has no folder "
                    f"{config_path.parent / str(v)}",
                    r"versions",
                )


def _check_batching(c: _Ctx, cfg: mc.ModelConfig) -> None:
    mbs = cfg.max_batch_size
    if cfg.HasField("dynamic_batching"):
        db = cfg.dynamic_batching
        if mbs == 0:
            c.add(
                "dynamic_batching: set but max_batch_size is 0 (the model cannot batch)", r"dynamic_batching"
            )
        for p in db.preferred_batch_size:
            if p <= 0 or (mbs > 0 and p > mbs):
                c.add(
                    f"dynamic_batching.preferred_batch_size: {p} is outside 1..max_batch_size ({mbs})",
                    r"preferred_batch_size",
                )
    if cfg.HasField("sequence_batching") and cfg.HasField("dynamic_batching"):
        c.add("dynamic_batching: cannot be combined with sequence_batching", r"sequence_batching")


def _check_ensemble(
    c: _Ctx, cfg: mc.ModelConfig, model_name: str | None, known_models: set[str] | None
) -> None:
    """Steps name real models (not the ensemble), and every tensor read is produced before."""
    steps = cfg.ensemble_scheduling.step
    if not steps:
        c.add("ensemble_scheduling.step: an ensemble needs at least one step", r"ensemble_scheduling")
    produced = {io.name for io in cfg.input}
    for i, s in enumerate(steps):
        pat = rf'model_name:\s*"{re.escape(s.model_name)}"'
        if not s.model_name:
            c.add(f"ensemble_scheduling.step[{i}].model_name: empty", r"step")
        elif known_models is not None and s.model_name not in known_models:
            c.add(
                f"ensemble_scheduling.step[{i}].model_name: model {s.model_name!r} "
                "is not in the repository",
                pat,
            )
        elif s.model_name == model_name:
            c.add(f"ensemble_scheduling.step[{i}].model_name: the ensemble refers to itself", pat)
        produced.update(s.output_map.values())
    for i, s in enumerate(steps):
        for k, v in s.input_map.items():
            if v not in produced:
                c.add(
                    f"ensemble_scheduling.step[{i}].input_map: {k!r} <- {v!r}: no ensemble input or step "
                    "output has that name",
                    rf'"{re.escape(v)}"',
                )
    for o in cfg.output:
        if o.name not in produced:
            c.add(f"output {o.name!r}: no ensemble step produces it", rf'"{re.escape(o.name)}"')


def _check_version_files(c: _Ctx, cfg: mc.ModelConfig, version_dirs: list[Path]) -> None:
    """Each version folder holds the model file Triton looks for; an ONNX graph matches the config."""
    want = expected_model_filename(cfg)
    if not want:
        return
    accepted = {want, *cfg.cc_model_filenames.values()}
    for vd in version_dirs:
        if not VERSION_RE.match(vd.name) or not vd.is_dir():
            continue
        if not any((vd / f).exists() for f in accepted):
            fpat = r"^\s*default_model_filename" if cfg.default_model_filename else None
            c.add(f"default_model_filename: version {vd.name} has no {want} ({vd / want} missing)", fpat)
            continue
        if backend_of(cfg) == "onnxruntime" and (vd / want).is_file():
            c.problems.extend(check_onnx(cfg, vd / want, c))


def _prod(xs: Iterable[int]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def onnx_signature(path: Path) -> tuple[dict[str, tuple[int, list[int]]], dict[str, tuple[int, list[int]]]]:
    """(inputs, outputs) of an ONNX graph: name -> (element type, dims with -1 for symbolic)."""
    from tritonops.repo.onnx_io import read_graph_io

    # Streams the file and skips the weights: memory does not grow with the model.
    g_inputs, g_outputs, inits = read_graph_io(path)

    def sig(vis: Iterable[Any]) -> dict[str, tuple[int, list[int]]]:
        out = {}
        for vi in vis:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
            out[vi.name] = (tt.elem_type, dims)
        return out

    return sig(g_inputs), sig(g_outputs)


def check_onnx(cfg: mc.ModelConfig, onnx_path: Path, c: _Ctx) -> list[Problem]:
    """Config inputs/outputs against the ONNX graph: names, element types, ranks, static dims."""
    out: list[Problem] = []
    try:
        g_in, g_out = onnx_signature(onnx_path)
    except RepositoryError as e:
        return [Problem(str(onnx_path), str(e).split(": ", 1)[-1])]
    batch = cfg.max_batch_size > 0
    for kind, ios, graph in (("input", cfg.input, g_in), ("output", cfg.output, g_out)):
        for io in ios:
            line = c.line_of_name(io.name)
            field = f"{kind} {io.name!r}"
            if io.name not in graph:
                out.append(
                    Problem(
                        c.path,
                        f"{field}: not in the ONNX graph {onnx_path} "
                        f"(graph {kind}s: {', '.join(sorted(graph)) or 'none'})",
                        line,
                    )
                )
                continue
            etype, gdims = graph[io.name]
            want_t = ONNX_TO_TRITON.get(etype)
            if want_t is not None and io.data_type != want_t:
                out.append(
                    Problem(
                        c.path,
                        f"{field}.data_type: {dtype_name(io.data_type)} but the ONNX graph "
                        f"has {dtype_name(want_t)}",
                        line,
                    )
                )
            dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
            full = ([-1] + dims) if batch else dims
            if not gdims and etype == 0:
                continue  # graph without shape information: nothing to compare
            if not gdims and full == [1]:
                continue  # a scalar graph tensor: a non-batching config says dims [ 1 ]
            if len(full) != len(gdims):
                extra = " (max_batch_size > 0 adds the batch dimension)" if batch else ""
                out.append(
                    Problem(
                        c.path,
                        f"{field}.dims: rank {len(full)}{extra} but the ONNX graph has rank "
                        f"{len(gdims)} {gdims}",
                        line,
                    )
                )
                continue
            if batch and gdims and gdims[0] != -1:
                out.append(
                    Problem(
                        c.path,
                        f"{field}: max_batch_size > 0 but the ONNX graph's first dimension is "
                        f"fixed at {gdims[0]} (no batch dimension to batch on)",
                        line,
                    )
                )
            for i, (cd, gd) in enumerate(zip(full, gdims, strict=True)):
                if batch and i == 0:
                    continue
                if cd != -1 and gd != -1 and cd != gd:
                    out.append(
                        Problem(
                            c.path, f"{field}.dims: dimension {i} is {cd} but the ONNX graph has {gd}", line
                        )
                    )
    missing = sorted(set(g_in) - {io.name for io in cfg.input})
    if missing:
        out.append(
            Problem(
                c.path,
                f"input: the ONNX graph {onnx_path} needs inputs the config lacks: {', '.join(missing)}",
            )
        )
    return out


def parse_for_validation(path: Path) -> tuple[mc.ModelConfig | None, str, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "", [Problem(str(path), "config.pbtxt missing")]
    except UnicodeDecodeError as e:
        return None, "", [Problem(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})")]
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        reason = re.sub(r"^\d+:\d+\s*:\s*", "", str(e))
        return None, text, [Problem(str(path), f"invalid config.pbtxt: {reason}", e.GetLine() or None)]
    return cfg, text, []
