"""One exception hierarchy. Every message names what it is about (file, field, model, region, server)."""

from __future__ import annotations


class TritonOpsError(Exception):
    """Root of every error tritonops raises on purpose.

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; ``--debug`` adds the traceback.
    """

    exit_code: int = 1


class ConfigError(TritonOpsError):
    """tritonops.yaml is missing, malformed or inconsistent."""


class RepositoryError(TritonOpsError):
    """A local model repository, its configs or its manifest is invalid."""


class ConversionError(TritonOpsError):
    """A recipe is invalid or a conversion step failed."""


class AccuracyError(ConversionError):
    """A converted target computes something too different from its source."""


class StoreError(TritonOpsError):
    """An object store (S3 or file://) refused or failed an operation."""


class RegionsFailedError(TritonOpsError):
    """Work over several regions finished where it could; each region that failed is named, with why."""


class ResidencyError(TritonOpsError):
    """A model would be published to a region its residency rule forbids."""


class TritonError(TritonOpsError):
    """A Triton server is unreachable, timed out or refused a control call."""


class TritonTimeout(TritonError):
    """A Triton call ran past its client-side timeout."""


class TritonUnreachable(TritonError):
    """A Triton server could not be reached (refused, reset, no route)."""


class MemoryProbeError(TritonOpsError):
    """Memory could not be measured (NVML absent, metrics unreachable, process gone)."""


class PlanError(TritonOpsError):
    """A plan is stale, unsafe or cannot be applied."""


class UnsafePlanError(PlanError):
    """A plan changes more at once than its guard allows without --force (``tritonops.guard``)."""


class StalePlanError(PlanError):
    """The state a saved plan was computed from has changed since."""


class LockHeldError(TritonOpsError):
    """Another reconcile holds the lock for this region."""

    exit_code = 3


class StackError(TritonOpsError):
    """The local dev stack (tritonserver + S3 server on loopback) failed to start or stop."""
