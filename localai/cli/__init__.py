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
            "localai.cli.bench_cmds", "localai.cli.quant_cmds", "localai.cli.action_cmds",
            "localai.cli.history_cmds", "localai.cli.model_cmds")
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
            add_completion=False,  # `localai init <shell>` completes, without running a program
            pretty_exceptions_enable=False,
            context_settings={"help_option_names": ["-h", "--help"]},
        )

        def root(version: bool = _version_option()) -> None:
            """A private AI assistant: quantized LLaMA-family models on your own computer."""

        app.callback()(root)
        _flags_show_no_type()
        for mod_name in _MODULES:
            for name, func in importlib.import_module(mod_name).COMMANDS.items():
                _name_values(func)
                app.command(name)(_ctrl_c_exits(func))
        _app = app
    return _app


def _version_option():
    import typer

    def show(value: bool) -> None:
        if value:
            print(_version())
            raise typer.Exit()

    return typer.Option(False, "--version", "-V", is_eager=True, callback=show, metavar="",
                        help="Print the version and exit.")


def _version() -> str:
    from .. import __version__

    return f"localai {__version__}"


# What an option's value is called in --help, by option name, else by type: words, not
# Python types. Flags show none.
METAVARS = {"--model": "MODEL", "--file": "FILE", "--socket": "PATH", "--schema": "FILE|JSON",
            "--grammar": "FILE", "--keep-alive": "DURATION", "--http": "[HOST:]PORT", "--shell": "SHELL",
            "--backend": "auto|numpy|mlx", "--type": "TYPE", "--system": "TEXT", "--instruction": "TEXT",
            "--language": "FILETYPE", "--prompt": "TEXT", "--stop": "TEXT", "--api-key": "KEY",
            "--prefix": "TEXT", "--suffix": "TEXT", "--query": "TEXT"}
TYPE_WORDS = {int: "N", float: "NUMBER", str: "TEXT"}


def _name_values(func) -> None:
    """Give every option and argument of a command a metavar in words (METAVARS)."""
    import inspect
    import typing

    from typer.models import ArgumentInfo, OptionInfo

    for p in inspect.signature(func).parameters.values():
        info = p.default
        if not isinstance(info, (OptionInfo, ArgumentInfo)) or info.metavar is not None:
            continue
        tp = p.annotation
        if isinstance(tp, str):
            tp = typing.get_type_hints(func).get(p.name, str)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = tp if not args else (typing.get_args(args[0]) or args)[0]
        if isinstance(info, ArgumentInfo):
            info.metavar = p.name.upper()
        elif base is bool:
            info.metavar = ""
        else:
            long = next((d for d in info.param_decls if d.startswith("--")), "")
            info.metavar = METAVARS.get(long) or TYPE_WORDS.get(base, "TEXT")


def _flags_show_no_type() -> None:
    """Typer labels every value with its Python type in --help (`<bool>` on flags, --help
    included; `<list[str]>` on arguments): flags show nothing, other options and arguments
    their metavar in words (_name_values)."""
    from typer import core

    for cls_name in ("TyperOption", "TyperArgument"):
        cls = getattr(core, cls_name, None)
        orig = getattr(cls, "display_type_rich", None)
        if orig is None or getattr(orig, "_localai", False):
            continue

        def display_type_rich(self, ctx, _orig=orig):
            if isinstance(self, core.TyperArgument) or getattr(self, "is_flag", False):
                return None
            return _orig(self, ctx)

        display_type_rich._localai = True
        cls.display_type_rich = display_type_rich


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
    if argv in (["--version"], ["-V"]):
        print(_version())
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
    except BrokenPipeError:  # the reader went away (`localai ask ... | head -1`): quietly, as Click does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(1)
