"""The ``tritonops`` typer app: root options, error handling, and lazy registration of commands.

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
from tritonops.errors import ExitCode, TritonOpsError

log = logging.getLogger("tritonops")


def _print_error(message: str) -> None:
    # markup=False: paths and model names may contain [brackets].
    err_console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def _is_click_flow(e: BaseException) -> bool:
    # Exit/usage errors of click, or of the click that newer typer vendors as typer._click.
    return type(e).__module__.split(".")[0] in ("click", "typer")


# click's usage error, reached through typer's public API (typer vendors its own click).
_UsageError: type[Exception] = typer.BadParameter.__mro__[1]
USAGE_EXIT_CODE = ExitCode.USAGE


def _usage_exit(e: Exception) -> typer.Exit:
    """A usage error as one line (no usage block, no box): `error: tritonops repo add: Missing argument...`."""
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} -h)" if ctx is not None else ""
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    _print_error(f"{where}{' '.join(msg.split())}{hint}")
    return typer.Exit(code=USAGE_EXIT_CODE)


class _Group(typer.core.TyperGroup):
    """Turns known errors into one line and an exit code, everywhere below the root."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        # The root's own options are parsed here, before invoke.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _UsageError as e:
            if STATE.debug:
                raise
            raise _usage_exit(e) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as e:
            if STATE.debug:
                raise
            raise _usage_exit(e) from None
        except TritonOpsError as e:
            if STATE.debug:
                raise
            _print_error(str(e))
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            if STATE.debug:
                raise
            _print_error("interrupted")
            raise typer.Exit(code=ExitCode.INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: no traceback without --debug
            if STATE.debug or _is_click_flow(e):
                raise
            if isinstance(e, OSError) and e.filename is not None:
                # A file the user can fix (permissions, a full disk, a path that is a file): name it.
                where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
                _print_error(f"{where}: {e.strerror or e}")
            else:
                _print_error(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
            raise typer.Exit(code=ExitCode.ERROR) from None


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


# Which module defines each top-level command or group: a command imports only its own module.
# tests/cli/test_cli.py checks this table against what the modules register.
COMMANDS = {
    "apply": "reconcile", "capacity": "capacity", "config": "config_cmd", "convert": "convert", "dev": "dev",
    "load": "control", "mem": "control",
    "plan": "reconcile", "promote": "release", "reconcile": "reconcile", "release": "release", "repo": "repo",
    "rollback": "release", "rollout": "release", "status": "control", "sync": "sync", "unload": "control",
}  # fmt: skip
_ROOT_OPTIONS_WITH_VALUE = ("--config", "-c")
_registered: set[str] = set()


def command_in(args: list[str]) -> str | None:
    """The command ``args`` dispatch to, or None where every command is needed (root help, a typo)."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in _ROOT_OPTIONS_WITH_VALUE:
            skip = True
        elif a in ("-h", "--help"):
            return None
        elif not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def register(command: str | None = None) -> None:
    """Import the module defining ``command`` (None: every command module); each adds to ``app``."""
    import importlib

    modules = sorted(set(COMMANDS.values())) if command is None else [COMMANDS[command]]
    for m in modules:
        if m not in _registered:
            importlib.import_module(f"tritonops.cli.{m}")
            _registered.add(m)
