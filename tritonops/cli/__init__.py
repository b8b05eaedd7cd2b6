"""The ``tritonops`` command: a thin typer layer over the library.

Every command parses flags, calls one library function and prints its result. Errors raised on
purpose (``TritonOpsError``) become one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from tritonops import __version__
from tritonops.cli._common import STATE, err_console
from tritonops.errors import TritonOpsError

log = logging.getLogger("tritonops")


def _print_error(message: str) -> None:
    # markup=False: paths and model names may contain [brackets].
    err_console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def _is_click_flow(e: BaseException) -> bool:
    # Exit/usage errors of click, or of the click that newer typer vendors as typer._click.
    return type(e).__module__.split(".")[0] in ("click", "typer")


class _Group(typer.core.TyperGroup):
    """Turns known errors into one line and an exit code, everywhere below the root."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TritonOpsError as e:
            if STATE.debug:
                raise
            _print_error(str(e))
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            if STATE.debug:
                raise
            _print_error("interrupted")
            raise typer.Exit(code=130) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: no traceback without --debug
            if STATE.debug or _is_click_flow(e):
                raise
            _print_error(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_Group,
    name="tritonops",
    help="Convert, version, publish and place models on NVIDIA Triton Inference Server fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tritonops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="tritonops.yaml to use (else $TRITONOPS_CONFIG, else ./tritonops.yaml)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show progress logs on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Convert, version, publish and place models on NVIDIA Triton Inference Server fleets."""
    STATE.debug = debug
    STATE.config_path = config
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _register() -> None:
    # One line per command module; each module adds its commands to ``app``.
    from tritonops.cli import config_cmd, control, convert, dev, reconcile, release, repo, sync  # noqa: F401


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tritonops")
