"""The client's side of actions: the `action` request's params, and running one through a
client. Pure and light (the standard library only): the instant-start CLI path and the shell
key binding call it. The daemon runs the action itself (localai.actions.registry).
"""
from __future__ import annotations

import os

# the `context` keys of the `action` method (protocol.ACTION_CONTEXT, repeated here so this
# module imports nothing)
CONTEXT_KEYS = ("text", "file", "filetype", "line", "column", "buffer", "diagnostics", "cwd", "shell", "os",
                "last_command", "last_status", "stdin", "instruction")


def action_params(name: str, text: str | None = None, file: str | None = None, line: int | None = None,
                  column: int | None = None, *, filetype: str | None = None, buffer: str | None = None,
                  diagnostics: list | None = None, cwd: str | None = None, shell: str | None = None,
                  os: str | None = None, last_command: str | None = None, last_status: int | None = None,
                  stdin: str | None = None, instruction: str | None = None, model: str | None = None,
                  **sampling) -> dict:
    """The params of an `action` request: {"name", "context": {...}, "model"?, sampling...}.
    `cwd` defaults to this process's working directory and `file` is made absolute against it
    (the daemon runs elsewhere); None values are left out."""
    import os as _os

    cwd = cwd or _os.getcwd()
    if file:
        file = _os.path.join(cwd, _os.path.expanduser(file))
    ctx = {"text": text, "file": file, "filetype": filetype, "line": line, "column": column, "buffer": buffer,
           "diagnostics": diagnostics, "cwd": cwd, "shell": shell, "os": os, "last_command": last_command,
           "last_status": last_status, "stdin": stdin, "instruction": instruction}
    out = {"name": name, "context": {k: v for k, v in ctx.items() if v is not None}}
    if model is not None:
        out["model"] = model
    out.update({k: v for k, v in sampling.items() if v is not None})
    return out


def run_action(client, params: dict, on_text=None) -> dict:
    """Send an `action` request and wait for its end; `on_text(piece)` sees the answer as it
    streams. Returns {"text": the post-processed result, "output", "answer": the streamed text,
    "finish_reason", "model", "timings", "json"?}; DaemonError on an `error` event."""
    id = client.send("action", params)
    done = None
    for ev in client.events(id):
        if ev.event == "token" and on_text is not None and ev.text:
            on_text(ev.text)
        elif ev.event == "done":
            done = ev
    result = dict(done.result or {})
    out = {"text": result.get("text", done.text or ""), "output": result.get("output"), "answer": done.text or "",
           "finish_reason": done.finish_reason, "model": done.model, "timings": done.timings}
    if "json" in result:
        out["json"] = result["json"]
    return out


def shell_name() -> str:
    """The login shell's name from $SHELL ('bash' when unknown)."""
    return _basename(os.environ.get("SHELL") or "bash") or "bash"


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
