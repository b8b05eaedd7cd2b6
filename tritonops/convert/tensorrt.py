"""TensorRT plans from the fp32 ONNX graph (extra ``tensorrt``; needs an NVIDIA GPU).

One plan per GPU type: a plan only runs on the compute capability and TensorRT version it was
built with, so the file is named ``model.plan.sm<cc>`` and listed in ``cc_model_filenames``; the
versions are recorded in the manifest. A timing cache beside the recipe's build folder makes
rebuilds fast and more reproducible.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tritonops.convert.export import Feeds
from tritonops.convert.recipe import TargetKind, TensorSpec
from tritonops.errors import ConversionError

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 2 << 30
OPT_BATCH = 8


def gpu_available() -> tuple[bool, str]:
    """(True, name and compute capability) or (False, why not)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return False, "no NVIDIA GPU"
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            name = pynvml.nvmlDeviceGetName(h)
            return True, f"{name.decode() if isinstance(name, bytes) else name} (sm{major}{minor})"
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing or no driver: same answer for a user
        return False, "no NVIDIA GPU"


def require_tensorrt(kind: TargetKind, model: str) -> Any:
    ok, why = gpu_available()
    if not ok:
        raise ConversionError(f"{model}: target {kind.value}: needs an NVIDIA GPU ({why} found by NVML)")
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ConversionError(
            f"{model}: target {kind.value}: the TensorRT Python API is not installed "
            f"(pip install 'tritonops[tensorrt]'): {e}"
        ) from None
    return trt


class _Calibrator:
    """An IInt8EntropyCalibrator2 over the recipe's calibration arrays (built lazily: needs trt)."""

    @staticmethod
    def make(trt: Any, data: Feeds, names: list[str], cache: Path) -> Any:
        import numpy as np
        import torch  # device buffers without pycuda: torch is already a dependency of the torch source

        class Calib(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.n = len(next(iter(data.values())))
                self.i = 0
                self.bufs: dict[str, Any] = {}

            def get_batch_size(self) -> int:
                return OPT_BATCH

            def get_batch(self, _names: list[str]) -> list[int] | None:
                if self.i + OPT_BATCH > self.n:
                    return None
                ptrs = []
                for nm in names:
                    a = np.ascontiguousarray(data[nm][self.i : self.i + OPT_BATCH])
                    self.bufs[nm] = torch.from_numpy(a).cuda()
                    ptrs.append(int(self.bufs[nm].data_ptr()))
                self.i += OPT_BATCH
                return ptrs

            def read_calibration_cache(self) -> bytes | None:
                return cache.read_bytes() if cache.exists() else None

            def write_calibration_cache(self, c: bytes) -> None:
                cache.write_bytes(bytes(c))

        return Calib()


def build_plan(
    kind: TargetKind,
    model: str,
    onnx_path: Path,
    specs: list[TensorSpec],
    max_batch: int,
    out_dir: Path,
    calibration: Feeds | None,
    timing_cache: Path,
) -> dict[str, Any]:
    """Build one plan for the local GPU; returns {cc_model_filenames, versions} for the manifest."""
    trt = require_tensorrt(kind, model)
    import pynvml

    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
    finally:
        pynvml.nvmlShutdown()
    cc = f"{major}.{minor}"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"{model}: {kind.value}: TensorRT cannot parse the ONNX graph: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    config.set_flag(trt.BuilderFlag.FP16)
    if kind is TargetKind.tensorrt_int8:
        assert calibration is not None
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _Calibrator.make(
            trt, calibration, [s.name for s in specs], out_dir / "calibration.cache"
        )
    profile = builder.create_optimization_profile()
    top = max(max_batch, 1)
    for s in specs:
        lo = s.concrete_shape(1, 1)
        opt = s.concrete_shape(min(OPT_BATCH, top), 8)
        hi = s.concrete_shape(top, 64)
        profile.set_shape(s.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if kind is TargetKind.tensorrt_int8:
        config.set_calibration_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConversionError(f"{model}: {kind.value}: TensorRT build failed (see the TensorRT log above)")
    name = f"model.plan.sm{major}{minor}"
    (out_dir / name).write_bytes(bytes(plan))
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "cc_model_filenames": {cc: name},
        "plan": name,
        "tensorrt": trt.__version__,
        "cuda_driver": cuda,
        "nvidia_driver": driver.decode() if isinstance(driver, bytes) else driver,
        "compute_capability": cc,
    }


def plan_runner(plan: Path) -> Any:
    """Run a plan on the GPU (TensorRT 10 tensor API, torch CUDA buffers) for the accuracy gate."""
    import numpy as np
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]

    def run(feeds: Feeds) -> dict[str, Any]:
        bufs = {}
        for n in inputs:
            bufs[n] = torch.from_numpy(np.ascontiguousarray(feeds[n])).cuda()
            ctx.set_input_shape(n, tuple(bufs[n].shape))
            ctx.set_tensor_address(n, bufs[n].data_ptr())
        for n in outputs:
            dt = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype
            bufs[n] = torch.empty(tuple(ctx.get_tensor_shape(n)), dtype=dt, device="cuda")
            ctx.set_tensor_address(n, bufs[n].data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise ConversionError(f"{plan}: TensorRT execution failed")
        stream.synchronize()
        return {n: bufs[n].cpu().numpy() for n in outputs}

    return run
