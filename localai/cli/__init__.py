"""The `localai` command line: a thin layer over the library.

Commands come from tables (`COMMANDS` in each module); each parses its arguments and calls
one library function. The Typer app is built on first use, so `localai init <shell>` (run at
every shell start by users who do not cache it) answers without loading Typer at all, and
nothing heavy is imported for the client commands.
"""
from __future__ import annotations

import sys

from ..errors import LocalAIError

_MODULES = ("localai.cli.engine_cmds", "localai.cli.client_cmds", "localai.cli.shell_cmds",
            "localai.cli.bench_cmds", "localai.cli.quant_cmds", "localai.cli.history_cmds")
_app = None


def get_app():
    """The Typer app with every module's COMMANDS registered."""
    global _app
    if _app is None:
        import importlib

        import typer

        app = typer.Typer(
            name="localai",
            help="A private AI assistant: quantized LLaMA-family models on your own computer.",
            no_args_is_help=True,
            add_completion=False,
            pretty_exceptions_enable=False,
        )
        for mod_name in _MODULES:
            for name, func in importlib.import_module(mod_name).COMMANDS.items():
                app.command(name)(_ctrl_c_exits(func))
        _app = app
    return _app


def _ctrl_c_exits(func):
    """Ctrl-C ends a command with status 130 and no message (Click would print "Aborted!")."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


def __getattr__(name: str):
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fast_path(argv: list[str]) -> int | None:
    """`localai init <shell>`: print the integration straight away (no Typer, no config);
    `ask`, `complete` and `run`: parsed by hand and sent with the light client (cli.fast).
    The exit status, or None when the Typer app should handle the command."""
    if len(argv) == 2 and argv[0] == "init" and not argv[1].startswith("-"):
        from ..shell_init import integration

        sys.stdout.write(integration(argv[1]))
        return 0
    if argv and argv[0] in ("ask", "complete", "run"):
        from . import fast

        return fast.main(argv)
    return None


def main() -> None:
    try:
        from . import user_input

        user_input.setup()  # arguments and stdin decode invalid UTF-8 the same way
        code = _fast_path(sys.argv[1:])
        if code is None:
            get_app()()
        elif code:
            sys.exit(code)
    except LocalAIError as exc:
        print(f"localai: error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
