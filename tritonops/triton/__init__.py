"""Control of Triton servers: one client over HTTP and gRPC with the same interface."""

from __future__ import annotations

from tritonops.triton.client import ControlClient, ModelState, UnloadResult, UnloadTimeout

__all__ = ["ControlClient", "ModelState", "UnloadResult", "UnloadTimeout"]
