"""`localai run NAME` runs an action (built-in or the user's, docs/actions.md) in the daemon;
`localai actions` lists them and the action files that failed to load.

Thin: the daemon builds the prompt and post-processes the answer; this sends the context the
CLI knows (TEXT or stdin, --file/--line/--column, the working directory, the shell) and prints
the result. Nothing here imports numpy or the engine.
"""
import json
import os
import sys
from typing import List, Optional

import typer

from .. import config as _config
from ..client import DaemonError
from ..errors import LocalAIError
from .client_cmds import MAX_TOKENS, MODEL, NO_DAEMON, TEMPERATURE, _client
from . import talk


def run(
    name: str = typer.Argument(..., help="The action (`localai actions` lists them)."),
    text: Optional[List[str]] = typer.Argument(None, help="The text to act on (else stdin)."),
    file: Optional[str] = typer.Option(None, "--file", "-f", help="The file the text is in (or that the action reads)."),
    line: Optional[int] = typer.Option(None, "--line", help="Cursor line in --file (1-based)."),
    column: Optional[int] = typer.Option(None, "--column", help="Cursor column (1-based)."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="For actions that take one (rewrite, translate)."),
    shell: Optional[str] = typer.Option(None, "--shell", help="The shell the action is for (default: $SHELL)."),
    last_command: Optional[str] = typer.Option(None, "--last-command", help="The previous shell command (the shell integration passes it)."),
    last_status: Optional[int] = typer.Option(None, "--last-status", help="Its exit status."),
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: text, output, answer, finish_reason, model, timings."),
    no_daemon: bool = NO_DAEMON,
    with_output: bool = typer.Option(False, "--with-output", hidden=True, help="First print the action's output kind on a line (for the shell key)."),
):
    """Run an action: `localai run commit-message`, `localai run explain-code -f a.py < a.py`."""
    code = talk.run_action(name, text, file, line, column, model, temperature, max_tokens, json_out, instruction,
                           shell, last_command, last_status, no_daemon, with_output)
    if code:
        raise typer.Exit(code)


def actions(
    json_out: bool = typer.Option(False, "--json", help="Print the daemon's answer as JSON."),
    names: bool = typer.Option(False, "--names", help="Only the names, one a line (for menus and completion)."),
    no_daemon: bool = NO_DAEMON,
):
    """List the actions (built-in and from your action files) and the files that failed to load."""
    cfg = _config.load()
    with _client(cfg, no_daemon) as client:
        try:
            res = client.call("actions")
        except DaemonError as exc:
            raise LocalAIError(exc.message) from None
    if json_out:
        print(json.dumps(res, ensure_ascii=False))
        return
    if names:
        print("\n".join(a["name"] for a in res["actions"]))
        return
    width = max((len(a["name"]) for a in res["actions"]), default=0)
    home = os.path.expanduser("~")
    for a in res["actions"]:
        src = "" if a["source"].endswith(os.path.join("localai", "actions", "builtin.py")) else \
            f"  [{a['source'].replace(home, '~', 1)}]"
        print(f"{a['name']:<{width}}  {a['output']:<11}  {a['help']}{src}")
    for e in res["errors"]:
        print(f"localai: error: {e['file']}:{e['line']}: {e['message']}", file=sys.stderr)


COMMANDS = {
    "run": run,
    "actions": actions,
}
