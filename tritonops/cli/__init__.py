"""The ``tritonops`` command: a thin typer layer over the library (built in :mod:`tritonops.cli.root`).

Start-up is part of every command's cost, so this module imports nothing heavy: ``--version``
answers without typer, and a command imports only its own module (see ``root.COMMANDS``).
``tritonops.cli.app`` (the typer app, for tests and embedding) has every command registered.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonops.cli.root import app as app


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

    register(command_in(args))
    app(prog_name="tritonops")
