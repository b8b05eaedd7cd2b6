"""One exception hierarchy, and the exit codes. Every message names what it is about (file, field,
model, region, server); errors carry the region, model, server and version as attributes too, so a
caller reads ``e.region`` instead of parsing the message."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status a tritonops command returns. Cron and CI read only these."""

    OK = 0
    ERROR = 1  # an error: what was asked was not (entirely) done
    USAGE = 2  # a bad command line (click's convention)
    CHANGES = 2  # plan --detailed-exitcode: changes pending (a plan, never an error, so never ambiguous)
    LOCK_HELD = 3  # another reconcile or rollout controller holds the lock
    OPTIONAL_FAILED = 4  # convert: an optional target failed (the required ones were built)
    ROLLED_BACK = 4  # rollout advance: a gate failed and every step was rolled back
    DEGRADED = 5  # reconcile: a server was skipped or an action failed
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class TritonOpsError(Exception):
    """Root of every error tritonops raises on purpose.

    The CLI prints ``str(error)`` as one line and exits with ``exit_code``; ``--debug`` adds the traceback.
    ``region``, ``model``, ``server``, ``version``: what the error is about, where the raiser knows it
    (None where it does not); the message names them too, unchanged.
    """

    exit_code: int = ExitCode.ERROR

    def __init__(
        self,
        *args: object,
        region: str | None = None,
        model: str | None = None,
        server: str | None = None,
        version: int | None = None,
    ) -> None:
        super().__init__(*args)
        self.region = region
        self.model = model
        self.server = server
        self.version = version


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
    """Another reconcile holds the lock for this region (or another controller the rollout's)."""

    exit_code = ExitCode.LOCK_HELD


class StackError(TritonOpsError):
    """The local dev stack (tritonserver + S3 server on loopback) failed to start or stop."""
