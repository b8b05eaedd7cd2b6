"""The ``tritonops`` command: a thin typer layer over the library (built in :mod:`tritonops.cli.root`).

Start-up is part of every command's cost, so this module imports nothing heavy: ``--version``
answers without typer, and a command imports only its own module (see ``root.COMMANDS``).
``tritonops.cli.app`` (the typer app, for tests and embedding) has every command registered.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonops.cli.root import app as app

GC_GEN0_THRESHOLD = 100_000  # container allocations between the cyclic collector's young-generation runs


def __getattr__(name: str) -> Any:
    if name == "app":
        from tritonops.cli.root import app, register

        register()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    args = sys.argv[1:]
    if args == ["--version"]:
        from tritonops import __version__

        sys.stdout.write(f"tritonops {__version__}\n")
        return
    from tritonops.cli.root import app, command_in, register

    # A command builds large structures that hold no cycles (an entry per file of the repository,
    # every manifest, botocore's service model); with the default thresholds the cyclic collector
    # walked them again and again, and once more at exit (measured on a no-op sync of 1,000 models
    # x 5 versions: 0.76 s -> 0.62 s). Collect rarely, and not what is left at exit.
    gc.set_threshold(GC_GEN0_THRESHOLD)
    register(command_in(args))
    try:
        app(prog_name="tritonops")
    finally:
        gc.freeze()

