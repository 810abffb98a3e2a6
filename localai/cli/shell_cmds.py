"""The shell-facing commands: `init` prints a shell's integration, `cmd` turns a description
into a command line, `explain` says what a command does.

`cmd` and `explain` are actions (`localai.actions`) the daemon runs (the `action` method), so
the shells, the editor and the CLI share their prompts and post-processing. Nothing here imports
numpy or the engine: the shell's key binding waits on this path.
"""
import os
import sys
from typing import List, Optional

import typer

from .. import danger
from .. import config as _config
from ..errors import LocalAIError
from ..shell_init import SHELLS, integration  # noqa: F401  (SHELLS re-exported)
from .client_cmds import MAX_TOKENS, MODEL, NO_DAEMON, TEMPERATURE, _client, _fetch_model, _read_stdin

SHELL = typer.Option(None, "--shell", help="The shell the command is for: bash, zsh, fish, ... (default: $SHELL).")


def init(shell: str = typer.Argument(..., help="bash, zsh or fish.")):
    """Print the shell integration: `eval "$(localai init zsh)"`, or in fish `localai init fish | source`."""
    sys.stdout.write(integration(shell))


def _action(name: str, text: str, shell: Optional[str], model: Optional[str], temperature: Optional[float],
            max_tokens: Optional[int], no_daemon: bool, on_text=None) -> str:
    """Run an action in the daemon (its sampling there, under these flags); returns its result."""
    from ..actions_client import action_params, run_action, shell_name
    from ..client import DaemonError

    cfg = _config.load()
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model, cfg)
    params = action_params(name, text=text, shell=shell or shell_name(), model=model,
                           temperature=temperature, max_tokens=max_tokens)
    with _client(cfg, no_daemon) as client:
        try:
            out = run_action(client, params, on_text)
        except DaemonError as exc:
            raise LocalAIError(exc.message) from None
    if not out["text"] and out["finish_reason"] != "cancelled":
        raise LocalAIError(f"the model's answer held no usable result for `{name}`: {out['answer'].strip()[:120]!r}")
    return out["text"]


def cmd(
    description: Optional[List[str]] = typer.Argument(None, help="What the command should do (else stdin)."),
    shell: Optional[str] = SHELL,
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    no_daemon: bool = NO_DAEMON,
):
    """Print one shell command that does what the description says (it is not run)."""
    text = " ".join(description or []).strip() or _read_stdin().strip()
    if not text:
        raise LocalAIError('nothing to turn into a command: `localai cmd "find files over 100 MB"`')
    command = _action("cmd", text, shell, model, temperature, max_tokens, no_daemon)
    warn = danger.warning(command)
    if warn:  # on stderr, before the command: the shells' suggestion key shows it too
        print(warn, file=sys.stderr, flush=True)
    print(command)


def explain(
    command: Optional[List[str]] = typer.Argument(None, help="The command (else stdin, else the previous "
                                                             "command when the shell integration is loaded)."),
    shell: Optional[str] = SHELL,
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    no_daemon: bool = NO_DAEMON,
):
    """Explain a shell command briefly; the answer streams."""
    text = (" ".join(command or []).strip() or _read_stdin().strip()
            or os.environ.get("LOCALAI_PREVIOUS_COMMAND", "").strip())
    if not text:
        raise LocalAIError("nothing to explain: `localai explain 'tar -xzf a.tgz'`; with the shell integration "
                           "loaded (`localai init --help`), `localai explain` explains the previous command")
    shown = []

    def show(piece: str) -> None:
        shown.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        _action("explain", text, shell, model, temperature, max_tokens, no_daemon, show)
    except KeyboardInterrupt:  # closing the connection stops the request in the daemon
        print(flush=True)
        raise typer.Exit(130)
    if not "".join(shown).endswith("\n"):
        print()


COMMANDS = {
    "init": init,
    "cmd": cmd,
    "explain": explain,
}
