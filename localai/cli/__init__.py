"""The `localai` command line: a thin layer over the library.

Commands come from tables (`COMMANDS` in each module); each parses its arguments and calls
one library function. Nothing heavy is imported here, so client commands start fast.
"""
from __future__ import annotations

import sys

import typer

from ..errors import LocalAIError

app = typer.Typer(
    name="localai",
    help="A private AI assistant: quantized LLaMA-family models on your own computer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_MODULES = ("localai.cli.engine_cmds", "localai.cli.client_cmds", "localai.cli.shell_cmds", "localai.cli.bench_cmds")


def _register() -> None:
    import importlib

    for mod_name in _MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            continue
        for name, func in mod.COMMANDS.items():
            app.command(name)(func)


_register()


def fail(message: str, code: int = 1):
    """Print an error a person can act on (no traceback) and exit."""
    print(f"localai: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except LocalAIError as exc:
        print(f"localai: error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
