"""The everyday commands: ask, chat, complete, rewrite, and the daemon's serve, stop, status.

Thin: each parses its arguments, reads the config file, and sends one request through the
socket client (or, with --no-daemon, the in-process client). Nothing here imports numpy or
the engine, so `localai ask` starts fast.
"""
import json
import os
import sys
import time
from typing import List, Optional

import typer

from .. import config as _config
from .. import protocol
from ..client import Client, DaemonError, NotRunning
from ..errors import LocalAIError
from . import talk, user_input
from .talk import ASSISTANT_SAMPLING, DROPPED, constraint_params  # noqa: F401  (re-exported)
from .talk import client_for as _client, fetch_model as _fetch_model  # noqa: F401  (shell_cmds uses them)
from .talk import emit_result as _emit_result, run as _run, sampling as _sampling, say_if_cut

NO_DAEMON = typer.Option(False, "--no-daemon", help="Run the engine in this process instead of the daemon.")
MODEL = typer.Option(None, "--model", "-m", help="Catalog name or path to a .gguf (default: config, else smollm2).")
TEMPERATURE = typer.Option(None, "--temperature", "-t", help="0 = greedy (default: config, else the engine's).")
MAX_TOKENS = typer.Option(None, "--max-tokens", "-n", help="Most tokens to generate.")
JSON_OUT = typer.Option(False, "--json", help="Print one JSON object: text, finish_reason, model, timings.")
SCHEMA = typer.Option(None, "--schema", help="Constrain the answer to this JSON schema (a file, or the JSON itself; `object` = any JSON object).")
GRAMMAR = typer.Option(None, "--grammar", help="Constrain the answer to the GBNF (or Lark) grammar in this file.")
DRAFT = typer.Option(None, "--draft", help="Speculative decoding: auto | none | lookup | model (the same text; faster when the answer copies the request).")

_read_stdin = user_input.read_stdin  # every command decodes user bytes the same way


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


# --- ask -----------------------------------------------------------------------------------------

def ask(
    question: Optional[List[str]] = typer.Argument(None, help="The question; text piped on stdin is appended."),
    model: Optional[str] = MODEL,
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt (default: config `system`)."),
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    draft: Optional[str] = DRAFT,
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the answer when it is complete."),
    json_out: bool = JSON_OUT,
    no_daemon: bool = NO_DAEMON,
    schema: Optional[str] = SCHEMA,
    grammar: Optional[str] = GRAMMAR,
):
    """Ask a question; the answer streams to stdout. `git diff | localai ask "write a commit message"`."""
    _exit(talk.ask(question, model, system, temperature, max_tokens, no_stream, json_out, no_daemon, schema, grammar, draft))


# --- chat ------------------------------------------------------------------------------------------

CHAT_HELP = """Enter sends. End a line with \\ to continue it, or wrap several lines in \"\"\".
/reset clears the history, /system TEXT sets the system prompt, /save FILE writes the
conversation (.json: messages; else text), /help, /quit. Ctrl-C stops a reply, Ctrl-D quits."""


def _read_message() -> str:
    """One user message: a line, lines joined by trailing backslashes, or a \"\"\" block."""
    line = input(">>> ")
    if line.lstrip().startswith('"""'):
        first = line.lstrip()[3:]
        if first.rstrip().endswith('"""') and first.strip():
            return first.rstrip()[:-3]
        lines = [first] if first else []
        while True:
            nxt = input("... ")
            if nxt.rstrip().endswith('"""'):
                lines.append(nxt.rstrip()[:-3])
                break
            lines.append(nxt)
        return "\n".join(lines).strip("\n")
    parts = []
    while line.endswith("\\"):
        parts.append(line[:-1])
        line = input("... ")
    parts.append(line)
    return "\n".join(parts)


def _save(path: str, history: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        if path.endswith(".json"):
            json.dump(history, f, ensure_ascii=False, indent=2)
            f.write("\n")
        else:
            for m in history:
                f.write(f"## {m['role']}\n\n{m['content']}\n\n")


def chat(
    model: Optional[str] = MODEL,
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt (default: config `system`)."),
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    draft: Optional[str] = DRAFT,
    no_daemon: bool = NO_DAEMON,
    resume: bool = typer.Option(False, "--continue", "-c", help="Resume the last conversation (from `localai logs`)."),
):
    """An interactive chat: streamed replies, history kept within the context."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    cfg = _config.load()
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model, cfg)
    given_system, system = system, system or cfg.system
    history = [{"role": "system", "content": system}] if system else []
    resumed = ""
    if resume:
        from .. import history as _history

        last = _history.last_conversation()
        if last is None:
            raise LocalAIError("no conversation to continue: the history holds no chat yet "
                               "(`localai logs`; `log = false` in the config keeps none)")
        history, row = last
        if given_system:  # a new --system replaces the old one
            history = [{"role": "system", "content": given_system}] + [m for m in history if m["role"] != "system"]
        resumed = f"\n(continuing the conversation of {_when(row['time'])}: {len(history)} messages)"
    sampling = _sampling(cfg, assistant=True, temperature=temperature, max_tokens=max_tokens, draft=draft)
    print(f"localai chat ({model or 'smollm2'}). {CHAT_HELP}{resumed}", flush=True)
    with _client(cfg, no_daemon) as client:
        while True:
            try:
                text = _read_message()
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print()
                continue
            cmd, _, arg = text.strip().partition(" ")
            if cmd in ("/quit", "/exit", "/bye"):
                return
            if cmd == "/help":
                print(CHAT_HELP)
                continue
            if cmd == "/reset":
                history = [m for m in history if m["role"] == "system"]
                print("(history cleared)")
                continue
            if cmd == "/system":
                history = [m for m in history if m["role"] != "system"]
                if arg.strip():
                    history.insert(0, {"role": "system", "content": arg.strip()})
                print(f"(system prompt {'set' if arg.strip() else 'cleared'})")
                continue
            if cmd == "/save":
                if not arg.strip():
                    print("usage: /save FILE")
                    continue
                try:
                    _save(os.path.expanduser(arg.strip()), history)
                    print(f"(saved {len(history)} messages to {arg.strip()})")
                except OSError as exc:
                    print(f"(cannot save: {exc})")
                continue
            if cmd.startswith("/") and " " not in cmd and len(cmd) > 1 and "\n" not in text:
                print(f"unknown command {cmd}; /help lists them")
                continue
            if not text.strip():
                continue
            history.append({"role": "user", "content": text})
            params = {"messages": history, "model": model, "truncate": True, **sampling}
            try:
                done = _run(client, "chat", params, sys.stdout)
            except KeyboardInterrupt:  # in the instant before the request went out
                history.pop()
                print("\n(stopped)", flush=True)
                continue
            except DaemonError as exc:
                history.pop()
                print(f"\nlocalai: error: {exc.message}", file=sys.stderr)
                if exc.code in ("disconnected",):
                    raise
                continue
            history.append({"role": "assistant", "content": done.text})
            if done.finish_reason == "cancelled":
                print("\n(stopped)", flush=True)
            else:
                print(flush=True)
                say_if_cut(done)
            if done.result and done.result.get("dropped"):
                print(f"(the context is full: the {done.result['dropped']} oldest messages were left out)")


# --- complete and rewrite -----------------------------------------------------------------------

def complete(
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Text before the cursor."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Text after the cursor."),
    file: Optional[str] = typer.Option(None, "--file", "-f", help="Complete in this file at --line/--column."),
    line: Optional[int] = typer.Option(None, "--line", help="Cursor line in --file (1-based; default: the end)."),
    column: int = typer.Option(1, "--column", help="Cursor column in --line (1-based)."),
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    draft: Optional[str] = DRAFT,
    json_out: bool = JSON_OUT,
    no_daemon: bool = NO_DAEMON,
):
    """Fill in the middle: print the text that belongs between the prefix and the suffix."""
    _exit(talk.complete(prefix, suffix, file, line, column, model, temperature, max_tokens, json_out, no_daemon, draft))


def rewrite(
    instruction: str = typer.Option(..., "--instruction", "-i", help='What to do, e.g. "fix the grammar".'),
    file: Optional[str] = typer.Option(None, "--file", "-f", help="Read the text from this file (default: stdin)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="A hint such as a file type."),
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    draft: Optional[str] = DRAFT,
    json_out: bool = JSON_OUT,
    no_daemon: bool = NO_DAEMON,
):
    """Rewrite text from stdin as instructed; prints only the replacement text."""
    cfg = _config.load()
    if file is not None:
        text = user_input.read_file(file)
    else:
        text = _read_stdin()
    if not text.strip():
        raise LocalAIError("nothing to rewrite: pipe the text in (`... | localai rewrite -i ...`) or give --file")
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model, cfg)
    params = {"text": text, "instruction": instruction, "language": language, "model": model,
              "stream": not json_out, **_sampling(cfg, temperature=temperature, max_tokens=max_tokens, draft=draft)}
    with _client(cfg, no_daemon) as client:
        done = _run(client, "rewrite", params, None if json_out else sys.stdout)
    if json_out:
        _emit_result(done, True, False)
    elif (text.endswith("\n") or done.finish_reason == "cancelled") and not done.text.endswith("\n"):
        print()
    say_if_cut(done, json_out)
    _exit(talk.status_of(done))


# --- the daemon ------------------------------------------------------------------------------------

def serve(
    background: bool = typer.Option(False, "--background", "-b", help="Detach; log to the file beside the socket."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model for requests that name none."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto | numpy | mlx"),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="Context length."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the numpy backend, pinned (default: up to the physical cores, fewer while other programs keep cores busy)."),
    keep_alive: Optional[str] = typer.Option(None, "--keep-alive", help="Unload an idle model after this long (10m, 30s, 0, -1 = never)."),
    socket_path: Optional[str] = typer.Option(None, "--socket", help="Socket path (default: $LOCALAI_SOCKET, else $XDG_RUNTIME_DIR/localai/localai.sock)."),
    http: Optional[str] = typer.Option(None, "--http", help="[HOST:]PORT: also serve the OpenAI and llama-server HTTP API there (host default 127.0.0.1)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Key the HTTP API requires (default: $LOCALAI_API_KEY); needed for a non-loopback --http."),
    draft_model: Optional[str] = typer.Option(None, "--draft-model", help="A small model of the same family that drafts for requests with --draft model (config `draft_model`)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", min=1, help="Requests that share one forward pass (config `max_batch`, default 32); 1 = no batching."),
):
    """Run the daemon that keeps models loaded and serves the CLI, shells and editors."""
    from .. import daemon

    if api_key:  # to a background daemon through its environment, not its command line
        os.environ["LOCALAI_API_KEY"] = api_key
    flags = dict(model=model, backend=backend, n_ctx=n_ctx, threads=threads, keep_alive=keep_alive, http=http,
                 draft_model=draft_model, max_batch=max_batch)
    path = socket_path or protocol.socket_path()
    if background:
        from ..client import pid_of, running

        if running(path):
            print(f"localai daemon already running (pid {pid_of(path)}) on {path}")
            return
        pid = daemon.start_background(path, tuple(_config.daemon_args(**flags)))
        print(f"localai daemon running (pid {pid}) on {path}; log: {protocol.sidecar(path, '.log')}")
        return
    cfg = _config.override(_config.load(), **flags)
    daemon.serve(cfg, path)


def stop(
    socket_path: Optional[str] = typer.Option(None, "--socket", help="Socket path of the daemon."),
):
    """Stop the daemon."""
    path = socket_path or protocol.socket_path()
    try:
        with Client(path, autostart=False) as c:
            pid = c.call("shutdown").get("pid")
    except NotRunning:
        print("localai daemon is not running")
        return
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"localai daemon stopped (pid {pid})")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _human_time(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def status(
    json_out: bool = typer.Option(False, "--json", help="Print the daemon's status object."),
    socket_path: Optional[str] = typer.Option(None, "--socket", help="Socket path of the daemon."),
):
    """Show the daemon's pid, uptime, loaded models, memory and counters (exit 1 if not running)."""
    path = socket_path or protocol.socket_path()
    try:
        with Client(path, autostart=False) as c:
            st = c.call("status")
    except NotRunning:
        if json_out:
            print(json.dumps({"running": False, "socket": path}))
        else:
            print(f"localai daemon: not running (socket {path})")
        raise typer.Exit(1)
    from .. import remote

    st["remotes"] = remote.probe(_config.load())  # each configured server: reachable? (asked from here)
    if json_out:
        print(json.dumps({"running": True, **st}, ensure_ascii=False))
        return
    ka = st["keep_alive_s"]
    print(f"localai daemon: running (pid {st['pid']}, up {_human_time(st['uptime_s'])}, version {st['version']})")
    print(f"socket: {st['socket']}" + (f"; HTTP: {st['http']}" if st.get("http") else ""))
    for m in st["models"] or [None]:
        if m is None:
            print(f"model: none loaded (default {st['default_model']}; loads on the next request)")
            continue
        idle = ", busy" if m["busy"] else f", idle {_human_time(m['idle_s'])}"
        bits = f", {m['activation_bits']}-bit activations" if m.get("activation_bits") else ""
        print(f"model: {m['name']} ({m['arch']} {m['quant']}, {m['backend']}{bits}, n_ctx {m['n_ctx']}{idle})")
        pc = m["prompt_cache"]
        print(f"prompt cache: {pc['sessions']} sessions, {_human_bytes(pc['bytes'])}, {pc['hits']} hits")
    print(f"keep-alive: {'never unload' if ka < 0 else _human_time(ka)}; memory: {_human_bytes(st['rss_bytes'])} RSS")
    print(f"requests: {st['requests_served']} served, {st['active']} running, {st['queued']} queued")
    if (b := st.get("batch")) and b["steps"]:
        print(f"batch: {b['requests_mean']:g} requests per step on average, at most {b['requests_max']} "
              f"(last {b['steps']} steps)")
    print(f"tokens: {st['tokens_generated']} generated, {st['tokens_evaluated']} evaluated, "
          f"{st['tokens_cached']} from the prompt cache")
    if st.get("remotes"):  # probed by this command, with this shell's keys (the daemon read its own at start)
        print("remotes (checked from this shell, with its environment's API keys):")
    for r in st.get("remotes") or []:
        for s in r["servers"]:
            n = len(s.get("models") or ())
            how = (f"reachable ({s['ms']:.0f} ms, {n} model{'' if n == 1 else 's'})"
                   if s["reachable"] else f"UNREACHABLE ({s['error']})")
            print(f"remote {r['name']}: {s['url']} {how}")


COMMANDS = {
    "ask": ask,
    "chat": chat,
    "complete": complete,
    "rewrite": rewrite,
    "serve": serve,
    "stop": stop,
    "status": status,
}
