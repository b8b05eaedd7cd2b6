"""Triton's ensemble rules: the data flow inside one ensemble, and between it and its steps' models.

Follows triton-inference-server/core: model_config_utils.cc (BuildEnsembleGraph,
ValidateEnsembleSchedulingConfig: every tensor written once, read, and reachable),
ensemble_scheduler/ensemble_utils.cc (ValidateEnsembleConfig, ValidateTensorMapping,
ValidateTensorConsistency: batch sizes, inputs and outputs mapped, data types and shapes agreeing
between steps, decoupled steps) and model_repository_manager.cc (required versions, circular
dependencies between ensembles).

A step's model is read from the repository (``load_config``). Triton compares against the config
the step's backend completed; a step whose config declares no inputs and outputs (completed by the
backend at load, e.g. python's auto_complete_config) is not compared, rather than guessed.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.rule_finding import Finding, name_pattern

ConfigLoader = Callable[[str], "mc.ModelConfig | None"]
MAX_CYCLE_DEPTH = 64


def repository_loader(repo_root: Path) -> ConfigLoader:
    """Reads ``<repo_root>/<model>/config.pbtxt``; None when missing or unparsable (reported on its own)."""
    cache: dict[str, mc.ModelConfig | None] = {}

    def load(name: str) -> mc.ModelConfig | None:
        if name not in cache:
            cfg: mc.ModelConfig | None = None
            path = repo_root / name / "config.pbtxt"
            with contextlib.suppress(OSError, UnicodeDecodeError, text_format.ParseError):
                cfg = text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
            cache[name] = cfg
        return cache[name]

    return load


def check(cfg: mc.ModelConfig, repo_root: Path, load_config: ConfigLoader | None = None) -> list[Finding]:
    load = load_config or repository_loader(repo_root)
    out = list(data_flow_rule(cfg))
    out += list(step_model_rules(cfg, load))
    out += list(required_version_rule(cfg, repo_root, load))
    out += list(cycle_rule(cfg, load))
    return out


# --- one ensemble's own graph (ValidateEnsembleSchedulingConfig) ---------------------------------


@dataclass
class _Tensor:
    written: bool = False
    ready: bool = False
    prev: list[str] = field(default_factory=list)
    next: list[str] = field(default_factory=list)


def data_flow_rule(cfg: mc.ModelConfig) -> Iterator[Finding]:
    tensors: dict[str, _Tensor] = {}
    for i, s in enumerate(cfg.ensemble_scheduling.step):
        pat = name_pattern(s.model_name) if s.model_name else r"\bstep"
        if s.model_name and not s.input_map:
            yield Finding(f"ensemble_scheduling.step[{i}]: must specify 'input_map' in step {i}", pat)
        if s.model_name and not s.output_map:
            yield Finding(f"ensemble_scheduling.step[{i}]: must specify 'output_map' in step {i}", pat)
        outs = []
        for v in s.output_map.values():
            t = tensors.setdefault(v, _Tensor())
            if t.written:
                yield Finding(
                    f"ensemble_scheduling.step[{i}].output_map: ensemble tensor '{v}' can appear in an output "
                    "map only once",
                    name_pattern(v),
                )
            t.written = True
            outs.append(v)
        for v in s.input_map.values():
            tensors.setdefault(v, _Tensor())
            for o in outs:
                tensors[o].prev.append(v)
                tensors[v].next.append(o)
    yield from _reachability(cfg, tensors)


def _reachability(cfg: mc.ModelConfig, tensors: dict[str, _Tensor]) -> Iterator[Finding]:
    queue: deque[str] = deque()
    for io in cfg.input:
        if io.name not in tensors:
            yield Finding(f"input {io.name!r}: ensemble input '{io.name}' is not used", name_pattern(io.name))
            continue
        tensors[io.name].ready = True
        queue.append(io.name)
    while queue:
        for n in tensors[queue.popleft()].next:
            t = tensors[n]
            if not t.ready and all(tensors[p].ready for p in t.prev):
                t.ready = True
                queue.append(n)
    outputs = set()
    for io in cfg.output:
        if io.name not in tensors:
            yield Finding(f"output {io.name!r}: ensemble output '{io.name}' is not used", name_pattern(io.name))
        elif not tensors[io.name].ready:
            cause = _not_ready_source(io.name, tensors)
            extra = f": at least one of its depending tensors, '{cause}', is not connected" if cause else ""
            yield Finding(f"output {io.name!r}: output '{io.name}' is not written{extra}", name_pattern(io.name))
        else:
            outputs.add(io.name)
    inputs = {io.name for io in cfg.input}
    for name, t in sorted(tensors.items()):
        if name in outputs or (name not in inputs and not t.written):
            continue  # an output, or never written: reported above or as a step input from nowhere
        if not t.ready or not t.next:
            yield Finding(
                f"ensemble_scheduling: ensemble tensor '{name}' is unused in ensemble '{cfg.name}'",
                name_pattern(name),
            )


def _not_ready_source(name: str, tensors: dict[str, _Tensor]) -> str | None:
    seen: set[str] = set()
    last, prev = name, tensors[name].prev
    while prev:
        nxt: list[str] = []
        for p in prev:
            if not tensors[p].ready and p not in seen:
                seen.add(p)
                last, nxt = p, tensors[p].prev
                break
        prev = nxt
    return None if last == name else last


# --- steps against their models (ValidateEnsembleConfig, ValidateTensorMapping) -----------------


@dataclass
class _Node:
    model: str
    dtype: int
    dims: list[int]
    full: list[int]
    decoupled: bool = False
    label: int = 0
    visited: bool = False
    prev: list[_Node] = field(default_factory=list)
    next: list[_Node] = field(default_factory=list)
    sibling: _Node | None = None


def _node(model: str, batching: bool, dtype: int, dims: Sequence[int]) -> _Node:
    d = list(dims)
    return _Node(model, dtype, d, ([-1] + d) if batching else d)


def _dims_match(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _consistency(tensor: str, a: _Node, b: _Node) -> Finding | None:
    if a.dtype != b.dtype:
        return Finding(
            f"ensemble tensor {tensor}: inconsistent data type: {mc.DataType.Name(a.dtype)} is inferred from "
            f"model {a.model} while {mc.DataType.Name(b.dtype)} is inferred from model {b.model}",
            name_pattern(tensor),
        )
    if not _dims_match(a.dims, b.dims) and not _dims_match(a.full, b.full):
        return Finding(
            f"ensemble tensor {tensor}: inconsistent shape: {a.full} is inferred from model {a.model} while "
            f"{b.full} is inferred from model {b.model}",
            name_pattern(tensor),
        )
    return None


def _completed_by_backend(cfg: mc.ModelConfig) -> bool:
    return not cfg.input and not cfg.output


def step_model_rules(cfg: mc.ModelConfig, load: ConfigLoader) -> Iterator[Finding]:
    batching = cfg.max_batch_size > 0
    nodes: dict[str, _Node] = {}
    for io in cfg.input:
        nodes.setdefault(io.name, _node(cfg.name, batching, io.data_type, _shape(io)))
    sink = _Node(cfg.name, 0, [], [])
    for io in cfg.output:
        n = nodes.setdefault(io.name, _node(cfg.name, batching, io.data_type, _shape(io)))
        sink.prev.append(n)
        n.next.append(sink)
    clean = True
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        scfg = load(step.model_name) if step.model_name else None
        if scfg is None or _completed_by_backend(scfg):
            clean = False
            continue
        found = list(_step_rules(cfg, i, step, scfg, nodes))
        clean = clean and not found
        yield from found
    if clean and cfg.ensemble_scheduling.step:
        yield from _decoupled_rule(cfg, nodes)


def _shape(io: mc.ModelInput | mc.ModelOutput) -> Sequence[int]:
    return io.reshape.shape if io.HasField("reshape") else io.dims


def _step_rules(
    cfg: mc.ModelConfig, i: int, step: mc.ModelEnsembling.Step, scfg: mc.ModelConfig, nodes: dict[str, _Node]
) -> Iterator[Finding]:
    where = f"ensemble_scheduling.step[{i}] ({step.model_name})"
    pat = name_pattern(step.model_name)
    if scfg.max_batch_size != 0 and scfg.max_batch_size < cfg.max_batch_size:
        yield Finding(
            f"{where}: ensemble {cfg.name} allows maximum batch size {cfg.max_batch_size}, but it contains "
            f"model {step.model_name} which only allows maximum batch size to be {scfg.max_batch_size}",
            pat,
        )
    sbatch = scfg.max_batch_size > 0
    inputs = {io.name: io for io in scfg.input}
    for k, v in sorted(step.input_map.items()):
        if k not in inputs:
            yield Finding(
                f"{where}.input_map: ensemble tensor {v} is mapping to non-existing input {k} in model "
                f"{step.model_name}",
                name_pattern(k),
            )
            continue
        yield from _link(nodes, v, _node(step.model_name, sbatch, inputs[k].data_type, inputs[k].dims))
    for io in scfg.input:
        if io.name not in step.input_map and not io.optional:
            yield Finding(
                f"{where}.input_map: input {io.name} in model {step.model_name} is not mapped to any ensemble tensors",
                pat,
            )
    outputs = {io.name: io for io in scfg.output}
    sibling = _Node(step.model_name, 0, [], [])
    for k, v in sorted(step.output_map.items()):
        if k not in outputs:
            yield Finding(
                f"{where}.output_map: ensemble tensor {v} is mapped from non-existing output {k} in model "
                f"{step.model_name}",
                name_pattern(k),
            )
            continue
        yield from _link(nodes, v, _node(step.model_name, sbatch, outputs[k].data_type, outputs[k].dims))
        nodes[v].sibling = sibling
    decoupled = scfg.model_transaction_policy.decoupled
    for v in step.output_map.values():
        if v not in nodes:
            continue
        nodes[v].decoupled = decoupled
        for u in step.input_map.values():
            if u in nodes:
                nodes[v].prev.append(nodes[u])
                nodes[u].next.append(nodes[v])


def _link(nodes: dict[str, _Node], tensor: str, model_tensor: _Node) -> Iterator[Finding]:
    if tensor in nodes:
        bad = _consistency(tensor, nodes[tensor], model_tensor)
        if bad:
            yield bad
    else:
        nodes[tensor] = model_tensor


def _decoupled_rule(cfg: mc.ModelConfig, nodes: dict[str, _Node]) -> Iterator[Finding]:
    """Each step's inputs come from the same decoupled model (responses of two cannot be paired)."""
    label = 0
    queue: deque[_Node] = deque()
    for io in cfg.input:
        nodes[io.name].visited = True
        queue.append(nodes[io.name])
    while queue:
        for n in queue.popleft().next:
            if n.visited or not all(p.visited for p in n.prev):
                continue
            if not n.prev:
                continue
            first = n.prev[0].label
            if any(p.label != first for p in n.prev):
                yield Finding(
                    f"ensemble_scheduling: in ensemble {cfg.name}, step of model '{n.model}' receives inputs "
                    "originated from different decoupled models",
                    name_pattern(n.model),
                )
                return
            if n.sibling is not None and n.sibling.visited:
                n.label = n.sibling.label
            else:
                if n.decoupled:
                    label += 1
                n.label = label if n.decoupled else first
                if n.sibling is not None:
                    n.sibling.label, n.sibling.visited = n.label, True
            n.visited = True
            queue.append(n)


# --- across the repository (model_repository_manager.cc) -----------------------------------------


def loaded_versions(cfg: mc.ModelConfig, present: list[int]) -> set[int]:
    """The versions Triton's version policy loads out of the folders present."""
    vp = cfg.version_policy
    which = vp.WhichOneof("policy_choice") if cfg.HasField("version_policy") else "latest"
    if which == "all":
        return set(present)
    if which == "specific":
        return set(vp.specific.versions) & set(present)
    n = vp.latest.num_versions if cfg.HasField("version_policy") else 1
    return set(sorted(present)[-max(n, 1) :])


def required_version_rule(cfg: mc.ModelConfig, repo_root: Path, load: ConfigLoader) -> Iterator[Finding]:
    for step in cfg.ensemble_scheduling.step:
        v = step.model_version
        scfg = load(step.model_name) if step.model_name else None
        if v <= 0 or scfg is None:
            continue
        folder = repo_root / step.model_name
        present = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0"]
        if v not in loaded_versions(scfg, present):
            yield Finding(
                f"ensemble_scheduling.step ({step.model_name}).model_version: ensemble '{cfg.name}' depends on "
                f"'{step.model_name}' whose required version {v} is not loaded",
                r"model_version:\s*" + str(v),
            )


def cycle_rule(cfg: mc.ModelConfig, load: ConfigLoader) -> Iterator[Finding]:
    """An ensemble reaching itself through other ensembles (a step naming itself is reported elsewhere)."""
    start = cfg.name
    stack: list[tuple[str, list[str]]] = [
        (s.model_name, [start, s.model_name]) for s in cfg.ensemble_scheduling.step if s.model_name != start
    ]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        if name in seen or len(path) > MAX_CYCLE_DEPTH:
            continue
        seen.add(name)
        sub = load(name)
        if sub is None or sub.platform != "ensemble":
            continue
        for s in sub.ensemble_scheduling.step:
            if s.model_name == start:
                chain = " -> ".join([*path, start])
                yield Finding(
                    f"ensemble_scheduling: circular dependency between ensembles: {chain}",
                    name_pattern(path[1]),
                )
                return
            stack.append((s.model_name, [*path, s.model_name]))
