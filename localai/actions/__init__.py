"""Actions: named requests written in Python, shared by the shells, the editor and the CLI.

An action builds a prompt from what the caller knows (the selection, the file, the staged
git diff, ...), may clean up the answer, and says where the answer goes. User actions live in
`$XDG_CONFIG_HOME/localai/actions/*.py` (and the files or folders of `actions_path` in the
config file); the daemon loads them on start and again when they change, so every client runs
the same ones by name (`localai run NAME`, `:LocalAI NAME`, the shell key). docs/actions.md
documents the API:

    from localai.actions import action, Context

    @action(help="write a conventional commit message for the staged diff",
            needs=["git_diff_staged"], output="stdout", temperature=0.2,
            post=lambda answer: answer.strip().splitlines()[0])
    def commit_message(ctx: Context) -> list[dict]:
        return [{"role": "system", "content": "..."}, {"role": "user", "content": ctx.git_diff_staged}]

The action's name is the function's with `_` -> `-` (or `name=`). The prompt builder returns
chat messages, or a string (one user message). Built-ins (cmd, explain, rewrite,
commit-message, ...) are defined the same way in localai/actions/builtin.py.

Imports nothing heavy (no numpy, no engine): the daemon runs the actions, the clients only
name them.
"""
from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Callable

from ..errors import LocalAIError


class ActionError(LocalAIError):
    code = "action_failed"


class UnknownAction(ActionError):
    code = "unknown_action"


class MissingContext(ActionError):
    code = "missing_context"


# --- where the request comes from ------------------------------------------------------------

def host_os() -> str:
    """'macOS 14.2', 'Linux (Debian GNU/Linux 12 (bookworm))', 'FreeBSD', ... for the prompt."""
    if sys.platform == "darwin":
        import platform

        return f"macOS {platform.mac_ver()[0]}".strip()
    if sys.platform.startswith("linux"):
        try:
            with open("/etc/os-release", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        return f"Linux ({line.split('=', 1)[1].strip().strip(chr(34))})"
        except OSError:
            pass
        return "Linux"
    return os.uname().sysname if hasattr(os, "uname") else sys.platform


def user_shell() -> str:
    """The login shell's name from $SHELL ('bash' when unknown)."""
    from ..actions_client import shell_name  # one reading of $SHELL, client and daemon alike

    return shell_name()


@dataclass
class Context:
    """What an action knows besides its name. Every field is optional; an action lists the
    ones it cannot do without in `needs` and gets a clear error when the caller gave none.
    The daemon fills `git_diff_staged` (from `cwd`), `buffer` and `filetype` (from `file`),
    `os` and `shell` itself when an action needs them."""
    text: str = ""                    # the selection, the TEXT argument or stdin
    file: str | None = None           # absolute path of the file the text is in
    filetype: str | None = None       # Neovim's 'filetype', or guessed from the file name
    line: int | None = None           # cursor line, 1-based
    column: int | None = None         # cursor column, 1-based
    buffer: str | None = None         # the text around the cursor (the editor's buffer, or the file)
    diagnostics: list = field(default_factory=list)  # [{"line", "column", "severity", "message"}] of the selection
    cwd: str | None = None            # the caller's working directory
    shell: str = field(default_factory=user_shell)
    os: str = field(default_factory=host_os)
    last_command: str | None = None   # the shell's previous command line ...
    last_status: int | None = None    # ... and its exit status
    stdin: str | None = None          # text piped to `localai run`
    instruction: str | None = None    # what the user typed for actions that take one (rewrite, translate)
    git_diff_staged: str | None = None  # `git diff --staged` in cwd (a need the daemon computes)


CONTEXT_FIELDS = tuple(f.name for f in fields(Context))
OUTPUTS = ("replace", "insert", "show", "stdout", "commandline")
# Sampling parameters an action may fix (the request's own values still win).
SAMPLING = ("temperature", "max_tokens", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
            "seed", "stop", "grammar")


def _call(fn: Callable, *args):
    """fn(answer) or fn(answer, ctx): as many of `args` as the function takes."""
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):  # a builtin such as str.strip
        return fn(*args[:1])
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn(*args[:1])
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return fn(*args)
    n = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return fn(*args[:max(1, n)])


@dataclass(frozen=True)
class Action:
    """One action. `prompt(ctx)` -> chat messages (or a string: one user message); `post(answer
    [, ctx])` -> the result (a string, or any JSON value); `enough(answer_so_far [, ctx])` ->
    True stops generating (the rest would be thrown away)."""
    name: str
    help: str
    prompt: Callable
    needs: tuple = ()
    output: str = "show"
    post: Callable | None = None
    enough: Callable | None = None
    sampling: dict = field(default_factory=dict)
    schema: dict | bool | None = None
    model: str | None = None
    source: str = "builtin"           # the file that defines it ("builtin" for localai's own)
    line: int = 0                     # the line of its definition


def action(fn: Callable | None = None, *, help: str | None = None, needs=(), output: str = "show",
           post: Callable | None = None, enough: Callable | None = None, schema=None, model: str | None = None,
           name: str | None = None, **sampling):
    """Declare an action (a decorator). `needs`: Context fields it cannot do without;
    `output`: where its answer goes (replace the selection, insert at the cursor, show in a
    window or stdout, put on the shell's command line); `schema`: constrain the answer to a JSON
    schema; `model`: the model it runs on; other keywords (temperature, max_tokens, stop, ...)
    are its sampling. The decorated function stays an Action (call `.prompt(ctx)`)."""
    bad = sorted(set(sampling) - set(SAMPLING))
    if bad:
        raise TypeError(f"@action: unknown keyword {bad[0]!r} (known: help, needs, output, post, enough, "
                        f"schema, model, name, {', '.join(SAMPLING)})")
    if output not in OUTPUTS:
        raise ValueError(f"@action: output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    needs = tuple([needs] if isinstance(needs, str) else needs)
    for n in needs:
        if n not in CONTEXT_FIELDS:
            raise ValueError(f"@action: unknown need {n!r} (known: {', '.join(CONTEXT_FIELDS)})")
    if "stop" in sampling and sampling["stop"] is not None:
        sampling["stop"] = list(sampling["stop"])

    def wrap(f: Callable) -> Action:
        code = getattr(f, "__code__", None)
        doc = (inspect.getdoc(f) or "").strip().splitlines()
        a = Action(name=name or f.__name__.replace("_", "-"), help=help or (doc[0] if doc else ""), prompt=f,
                   needs=needs, output=output, post=post, enough=enough,
                   sampling={k: v for k, v in sampling.items() if v is not None}, schema=schema, model=model,
                   source=code.co_filename if code else "?", line=code.co_firstlineno if code else 0)
        _define(a)
        return a

    return wrap(fn) if fn is not None else wrap


# Where @action puts what it defines: the built-in table, or (while the daemon loads a user
# file) that file's list.
ACTIONS: dict[str, Action] = {}
_loading: list | None = None


def _define(a: Action) -> None:
    if _loading is not None:
        _loading.append(a)
    else:
        ACTIONS[a.name] = a


def get(name: str) -> Action:
    """A built-in action by name (the daemon's table adds the user's: registry.Registry)."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise UnknownAction(f"no action named {name!r}; actions: {', '.join(sorted(ACTIONS))}") from None


def messages(a: Action, ctx: Context) -> list:
    """The action's chat messages for `ctx` (a string from the builder is one user message)."""
    out = a.prompt(ctx)
    if isinstance(out, str):
        out = [{"role": "user", "content": out}]
    if not isinstance(out, list) or not out or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in out):
        raise TypeError(f"the prompt builder must return a string or a non-empty list of "
                        f'{{"role": str, "content": str}} messages, not {str(out)[:80]}')
    return out


def params(name: str, text: str, context: Context | None = None, **overrides) -> dict:
    """The `chat` request an action's prompt makes (built here, not in the daemon; tests and
    tools that want the prompt itself); `overrides` win where they are not None."""
    a = get(name)
    if not text.strip():
        raise ActionError(f"nothing to give the `{name}` action: the text is empty")
    ctx = context or Context()
    ctx.text = text.strip()
    out = {"messages": messages(a, ctx), **a.sampling}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def run(client, name: str, text: str, context: Context | None = None, on_text=None, **overrides) -> str:
    """Run an action in the daemon (the `action` method) through a client and return its
    result; `on_text(piece)` sees the answer as it streams."""
    from ..actions_client import action_params, run_action

    ctx = context or Context()
    fields_ = {k: getattr(ctx, k) for k in ("shell", "os", "cwd", "file", "line", "column", "filetype")}
    p = action_params(name, text=text, **fields_, **overrides)
    return run_action(client, p, on_text)["text"]


from .builtin import command_complete, first_command  # noqa: E402,F401  (defines the built-ins)
