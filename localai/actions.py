"""Actions: named requests shared by the shells, the editor and the CLI.

An action is a prompt builder (the user's text and where it comes from -> chat messages) and
a post-processor (the model's answer -> what the caller uses), plus the sampling it needs.
They live in one table, `ACTIONS`, by name, so every client runs `cmd` or `explain` the same
way and user-defined actions can be registered beside them:

    from localai import actions
    from localai.client import Client
    with Client() as c:
        print(actions.run(c, "cmd", "find files over 100 MB", actions.Context(shell="zsh")))

Imports nothing heavy (no numpy, no engine): the shell key binding waits on this path.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable

from .errors import LocalAIError


class ActionError(LocalAIError):
    code = "action_failed"


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
    return os.path.basename(os.environ.get("SHELL") or "bash") or "bash"


@dataclass(frozen=True)
class Context:
    """What an action knows besides the user's text."""
    shell: str = field(default_factory=user_shell)
    os: str = field(default_factory=host_os)


# --- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    name: str
    help: str                                          # one line, for `--help` and menus
    prompt: Callable[[str, Context], list]             # (text, context) -> chat messages
    post: Callable[[str], str] = str.strip             # model answer -> result
    sampling: dict = field(default_factory=dict)       # chat params the action needs
    enough: Callable[[str], bool] | None = None        # answer so far -> stop generating now?


ACTIONS: dict[str, Action] = {}


def register(action: Action) -> Action:
    """Add (or replace) an action under its name."""
    ACTIONS[action.name] = action
    return action


def get(name: str) -> Action:
    try:
        return ACTIONS[name]
    except KeyError:
        raise ActionError(f"no action named {name!r}; actions: {', '.join(sorted(ACTIONS))}") from None


def params(name: str, text: str, context: Context | None = None, **overrides) -> dict:
    """The `chat` request of an action: its messages and sampling; `overrides` (request
    parameters such as model, temperature, max_tokens) win where they are not None."""
    action = get(name)
    if not text.strip():
        raise ActionError(f"nothing to give the `{name}` action: the text is empty")
    out = {"messages": action.prompt(text.strip(), context or Context()), **action.sampling}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def run(client, name: str, text: str, context: Context | None = None, on_text=None, **overrides) -> str:
    """Run an action through a client (socket or in-process) and return its post-processed
    result; ActionError when the answer holds nothing usable. `on_text(piece)` sees the answer
    as it streams. Generation stops as soon as the action has `enough`."""
    action = get(name)
    id = client.send("chat", params(name, text, context, **{**overrides, "stream": True}))
    answer, stopping = "", False
    for ev in client.events(id):
        if ev.event == "token":
            answer += ev.text
            if on_text is not None:
                on_text(ev.text)
            if not stopping and action.enough is not None and action.enough(answer):
                client.cancel(id)  # the rest would be thrown away: do not wait for it
                stopping = True
        elif ev.event == "done":
            if ev.finish_reason == "cancelled" and not stopping:
                raise ActionError(f"the `{name}` request was cancelled")
            answer = ev.text if ev.text is not None else answer
    return finish(name, answer)


def finish(name: str, answer: str) -> str:
    result = get(name).post(answer)
    if not result:
        raise ActionError(f"the model's answer held no usable result for `{name}`: {answer.strip()[:120]!r}")
    return result


# --- cmd: a description becomes one shell command ------------------------------------------

CMD_SYSTEM = (
    "You turn a description into one {shell} command for {os}. "
    "Reply with the command only, on one line: no explanation, no code fences, no prompt sign."
)

# A few turns of example: a small model follows a pattern better than a rule. They stay the
# same for every request, so the daemon's prompt cache keeps them evaluated.
CMD_EXAMPLES = (
    ("list the files in this directory, largest first", "ls -lS"),
    ("show the last 20 lines of app.log", "tail -n 20 app.log"),
    ("find the .py files under src changed today", "find src -name '*.py' -mtime -1"),
    ("how much disk space is free", "df -h"),
)


def cmd_prompt(text: str, ctx: Context) -> list:
    messages = [{"role": "system", "content": CMD_SYSTEM.format(shell=ctx.shell, os=ctx.os)}]
    for ask, answer in CMD_EXAMPLES:
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": text}]


_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT_SIGN = re.compile(r"^(?:\$|%|❯|>>>)\s+")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_PROSE_START = re.compile(r"^(?:here|to|you|this|the|use|try|run|it|i|sure|certainly|command|answer)\b[ :,']",
                          re.I)


def _code_lines(text: str) -> list:
    """The lines of the first fenced block when there is one, else all the lines."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    if starts:
        rest = lines[starts[0] + 1:]
        end = next((i for i, line in enumerate(rest) if _FENCE.match(line)), len(rest))
        if any(line.strip() for line in rest[:end]):
            return rest[:end]
    return lines


def first_command(answer: str) -> str:
    """One command line out of a model's answer: the body of a code fence if there is one,
    without `$ ` prompt signs, comment lines and prose around it; a line ending in `\\` is
    joined with the next. '' when nothing looks like a command."""
    text = answer.strip()
    one_line = re.fullmatch(r"```(?:[a-z]+\s)?\s*([^`\n]+?)\s*```", text)  # ```ls -l``` on one line
    if one_line:
        return one_line.group(1).strip()
    lines = [line.strip() for line in _code_lines(text)]
    for i, line in enumerate(lines):
        line = _PROMPT_SIGN.sub("", line)
        if not line or line.startswith("#") or _FENCE.match(line):
            continue
        inline = _INLINE_CODE.findall(line)
        if line.startswith("`") and inline:  # `ls -l` - lists files
            return inline[0].strip()
        if line.endswith(":") or _PROSE_START.match(line):
            if inline:  # "Use `du -sh *` to ..."
                return max(inline, key=len).strip()
            continue
        parts = [line]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts[-1] = parts[-1][:-1].rstrip()
            parts.append(lines[i])
        return " ".join(p for p in parts if p).strip()
    return ""


def command_complete(answer: str) -> bool:
    """True once the complete lines of a streaming answer hold the command `first_command`
    would pick (and it does not go on on the next line)."""
    done, _, _ = answer.rpartition("\n")
    return bool(first_command(done)) and not done.rstrip().endswith("\\")


register(Action("cmd", "turn a description into one shell command for this shell and OS",
                cmd_prompt, first_command, {"temperature": 0.0, "max_tokens": 64}, command_complete))


# --- explain: what a command does ----------------------------------------------------------

EXPLAIN_SYSTEM = (
    "You explain {shell} commands on {os}. Say briefly what the command does, part by part, "
    "in at most four short sentences of plain text."
)


def explain_prompt(text: str, ctx: Context) -> list:
    return [{"role": "system", "content": EXPLAIN_SYSTEM.format(shell=ctx.shell, os=ctx.os)},
            {"role": "user", "content": f"Explain this command:\n{text}"}]


register(Action("explain", "explain a shell command briefly", explain_prompt, str.strip, {"max_tokens": 160}))
