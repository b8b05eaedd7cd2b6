"""tritonops: convert, version, publish and place models on Triton Inference Server fleets."""

from tritonops.errors import TritonOpsError

__version__ = "0.1.0"
__all__ = ["TritonOpsError", "__version__"]
