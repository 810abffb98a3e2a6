"""The instant path: `localai ask`, `complete` and `run` parsed by hand and sent through the
light socket client, without loading Typer (which alone costs ~0.1 s of imports).

The same options as the Typer commands (client_cmds) and the same function behind them
(localai.cli.talk), so output and exit codes are the same. Anything this parser does not
take as given -- `-h`/`--help`, an option it does not know, a value that is not a number,
`-n5` spellings -- returns None before anything is read, and the Typer app handles the
command (and says what is wrong, as it always has).
"""
from __future__ import annotations

FLAG = bool  # an option without a value

# option spellings -> (parameter of the talk function, type); shared by the three commands
_SAMPLING = {"-m": ("model", str), "--model": ("model", str),
             "-t": ("temperature", float), "--temperature": ("temperature", float),
             "-n": ("max_tokens", int), "--max-tokens": ("max_tokens", int),
             "--json": ("json_out", FLAG)}

# command -> (talk function name, options, name of the variadic positional (None: none),
#             name of a leading positional that must be given (None: none))
COMMANDS = {
    "ask": ("ask", {**_SAMPLING, "-s": ("system", str), "--system": ("system", str),
                    "--no-stream": ("no_stream", FLAG), "--no-daemon": ("no_daemon", FLAG),
                    "--schema": ("schema", str), "--grammar": ("grammar", str)}, "question", None),
    "complete": ("complete", {**_SAMPLING, "--prefix": ("prefix", str), "--suffix": ("suffix", str),
                              "-f": ("file", str), "--file": ("file", str), "--line": ("line", int),
                              "--column": ("column", int), "--no-daemon": ("no_daemon", FLAG)}, None, None),
    "run": ("run_action", {**_SAMPLING, "-f": ("file", str), "--file": ("file", str), "--line": ("line", int),
                           "--column": ("column", int)}, "text", "name"),
}


def parse(argv: list) -> tuple | None:
    """argv after the program name -> (talk function name, keyword arguments); None when the
    Typer app should handle it."""
    if not argv or argv[0] not in COMMANDS:
        return None
    func, options, rest_name, first_name = COMMANDS[argv[0]]
    kwargs, rest, i, only_args = {}, [], 1, False
    while i < len(argv):
        arg = argv[i]
        i += 1
        if only_args or arg == "-" or not arg.startswith("-"):
            rest.append(arg)
            continue
        if arg == "--":
            only_args = True
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in options:
            return None  # -h, --help, an unknown option, -n5: Typer's
        dest, tp = options[name]
        if tp is FLAG:
            if eq:
                return None
            kwargs[dest] = True
            continue
        if not eq:
            if i >= len(argv):
                return None  # a missing value: Typer says so
            value = argv[i]
            i += 1
        try:
            kwargs[dest] = tp(value)
        except ValueError:
            return None
    if first_name is not None:
        if not rest:
            return None
        kwargs[first_name] = rest.pop(0)
    if rest_name is not None:
        kwargs[rest_name] = rest or None
    elif rest:
        return None
    return func, kwargs


def main(argv: list) -> int | None:
    """Run the command if this path takes it; the exit status, or None for the Typer app."""
    parsed = parse(argv)
    if parsed is None:
        return None
    func, kwargs = parsed
    if func == "run_action":
        from .. import protocol

        if "action" not in protocol.METHODS:  # a daemon protocol without actions: Typer's `run`
            return None
    from . import talk

    return getattr(talk, func)(**kwargs)
