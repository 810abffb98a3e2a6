"""The everyday commands: ask, chat, complete, rewrite, and the daemon's serve, stop, status.

Thin: each parses its arguments, reads the config file, and sends one request through the
socket client (or, with --no-daemon, the in-process client). Nothing here imports numpy or
the engine, so `localai ask` starts fast.
"""
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import List, Optional

import typer

from .. import config as _config
from .. import protocol
from ..client import Client, DaemonError, NotRunning
from ..errors import LocalAIError
from . import user_input

NO_DAEMON = typer.Option(False, "--no-daemon", help="Run the engine in this process instead of the daemon.")
MODEL = typer.Option(None, "--model", "-m", help="Catalog name or path to a .gguf (default: config, else smollm2).")
TEMPERATURE = typer.Option(None, "--temperature", "-t", help="0 = greedy (default: config, else the engine's).")
MAX_TOKENS = typer.Option(None, "--max-tokens", "-n", help="Most tokens to generate.")
JSON_OUT = typer.Option(False, "--json", help="Print one JSON object: text, finish_reason, model, timings.")
SCHEMA = typer.Option(None, "--schema", help="Constrain the answer to this JSON schema (a file, or the JSON itself; `object` = any JSON object).")
GRAMMAR = typer.Option(None, "--grammar", help="Constrain the answer to the GBNF (or Lark) grammar in this file.")


def constraint_params(schema: Optional[str], grammar: Optional[str]) -> dict:
    """--schema FILE|JSON and --grammar FILE as request params (read here, checked by the daemon)."""
    if schema and grammar:
        raise LocalAIError("give --schema or --grammar, not both")
    out = {}
    if grammar:
        try:
            with open(grammar, encoding="utf-8") as f:
                out["grammar"] = f.read()
        except OSError as exc:
            raise LocalAIError(f"--grammar {grammar}: {exc.strerror or exc}") from None
    if schema:
        text = schema
        if schema == "object":
            text = "true"
        elif not schema.lstrip().startswith("{"):
            try:
                with open(schema, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                raise LocalAIError(f"--schema {schema}: not a file or a JSON object ({exc.strerror or exc})") from None
        try:
            out["schema"] = json.loads(text)
        except ValueError as exc:
            raise LocalAIError(f"--schema: not valid JSON: {exc}") from None
    return out


# --- shared plumbing ---------------------------------------------------------------------------

def _client(cfg, no_daemon: bool):
    if no_daemon:
        from ..daemon.inprocess import InProcessClient  # the engine loads here, on purpose

        return InProcessClient(cfg)
    return Client()


def _fetch_model(model: Optional[str]) -> None:
    """A catalog model that is not downloaded yet is fetched here, with progress, before the
    daemon needs it; a path that does not exist fails here with a clear message."""
    from .. import store

    store.resolve(model or store.DEFAULT_MODEL)


# ask and chat answer people: a cooler, less repetitive default than the engine's raw
# llama.cpp defaults (small models loop at 0.8). The config file and flags override these.
ASSISTANT_SAMPLING = {"temperature": 0.3, "top_p": 0.9}


def _sampling(cfg, assistant: bool = False, **flags) -> dict:
    out = dict(ASSISTANT_SAMPLING) if assistant else {}
    out.update(cfg.sampling)
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


@contextmanager
def _ctrl_c_cancels(client):
    """While a request runs, Ctrl-C asks the daemon to stop it (it ends with done/cancelled)
    instead of killing the program. Yields a list: put the request id in it once sent."""
    sent, hit = [], []

    def handler(signum, frame):
        hit.append(True)
        if sent:
            client.cancel(sent[0])

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield sent, hit
    finally:
        signal.signal(signal.SIGINT, old)


def _run(client, method: str, params: dict, out=None):
    """Send a request, write its text to `out` as it streams; returns the Done event."""
    done = None
    with _ctrl_c_cancels(client) as (sent, hit):
        sent.append(client.send(method, params))
        if hit:  # Ctrl-C came before the request was out
            client.cancel(sent[0])
        for ev in client.events(sent[0]):
            if ev.event == "token" and out is not None:
                out.write(ev.text)
                out.flush()
            elif ev.event == "done":
                done = ev
    return done


def _emit_result(done, json_out: bool, streamed: bool, out=sys.stdout) -> None:
    if json_out:
        print(json.dumps({"text": done.text, "finish_reason": done.finish_reason, "model": done.model,
                          "timings": done.timings}, ensure_ascii=False))
        return
    if not streamed:
        out.write(done.text)
    if not done.text.endswith("\n"):
        out.write("\n")
    out.flush()


_read_stdin = user_input.read_stdin  # every command decodes user bytes the same way


# --- ask -----------------------------------------------------------------------------------------

def ask(
    question: Optional[List[str]] = typer.Argument(None, help="The question; text piped on stdin is appended."),
    model: Optional[str] = MODEL,
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt (default: config `system`)."),
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
    no_stream: bool = typer.Option(False, "--no-stream", help="Print the answer when it is complete."),
    json_out: bool = JSON_OUT,
    no_daemon: bool = NO_DAEMON,
    schema: Optional[str] = SCHEMA,
    grammar: Optional[str] = GRAMMAR,
):
    """Ask a question; the answer streams to stdout. `git diff | localai ask "write a commit message"`."""
    cfg = _config.load()
    constrained = constraint_params(schema, grammar)
    text = " ".join(question or []).strip()
    piped = _read_stdin()
    if piped.strip():
        text = f"{text}\n\n{piped}" if text else piped
    if not text.strip():
        raise LocalAIError('nothing to ask: give a question (`localai ask "..."`) or pipe text in')
    messages = []
    if system or cfg.system:
        messages.append({"role": "system", "content": system or cfg.system})
    messages.append({"role": "user", "content": text})
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model)
    streamed = not (no_stream or json_out)
    params = {"messages": messages, "model": model, "stream": streamed, **constrained,
              **_sampling(cfg, assistant=True, temperature=temperature, max_tokens=max_tokens)}
    with _client(cfg, no_daemon) as client:
        done = _run(client, "chat", params, sys.stdout if streamed else None)
    _emit_result(done, json_out, streamed)
    if done.finish_reason == "cancelled":
        raise typer.Exit(130)


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
    no_daemon: bool = NO_DAEMON,
):
    """An interactive chat: streamed replies, history kept within the context."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    cfg = _config.load()
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model)
    system = system or cfg.system
    history = [{"role": "system", "content": system}] if system else []
    sampling = _sampling(cfg, assistant=True, temperature=temperature, max_tokens=max_tokens)
    print(f"localai chat ({model or 'smollm2'}). {CHAT_HELP}", flush=True)
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
    json_out: bool = JSON_OUT,
    no_daemon: bool = NO_DAEMON,
):
    """Fill in the middle: print the text that belongs between the prefix and the suffix."""
    cfg = _config.load()
    if file is not None:
        content = user_input.read_file(file)
        lines = content.splitlines(keepends=True)
        if line is None:
            cut = len(content)
        else:
            if not 1 <= line <= len(lines) + 1:
                raise LocalAIError(f"--line {line} is outside {file} (1..{len(lines)})")
            cut = sum(len(x) for x in lines[: line - 1]) + column - 1
        prefix, suffix = content[:cut], content[cut:]
    elif prefix is None:
        prefix = _read_stdin()
    model = model or cfg.model
    if not no_daemon:
        _fetch_model(model)
    params = {"prefix": prefix, "suffix": suffix or "", "model": model, "stream": not json_out,
              "temperature": temperature, "max_tokens": max_tokens}
    with _client(cfg, no_daemon) as client:
        done = _run(client, "complete", params, None if json_out else sys.stdout)
    dropped = {k: getattr(done, k) for k in DROPPED if getattr(done, k)}
    if json_out:
        print(json.dumps({"text": done.text, "finish_reason": done.finish_reason, "model": done.model,
                          "timings": done.timings, **dropped}, ensure_ascii=False))
        return
    if sys.stdout.isatty():
        print()
    if dropped:
        said = ", ".join(f"{n} {DROPPED[k]}" for k, n in dropped.items())
        print(f"localai: the context is full: left out {said}", file=sys.stderr)


# done fields of `complete` -> what they count
DROPPED = {"dropped_prefix_tokens": "tokens at the start of the prefix",
           "dropped_suffix_tokens": "tokens at the end of the suffix",
           "dropped_extra": "extra chunks"}


def rewrite(
    instruction: str = typer.Option(..., "--instruction", "-i", help='What to do, e.g. "fix the grammar".'),
    file: Optional[str] = typer.Option(None, "--file", "-f", help="Read the text from this file (default: stdin)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="A hint such as a file type."),
    model: Optional[str] = MODEL,
    temperature: Optional[float] = TEMPERATURE,
    max_tokens: Optional[int] = MAX_TOKENS,
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
        _fetch_model(model)
    params = {"text": text, "instruction": instruction, "language": language, "model": model,
              "stream": not json_out, **_sampling(cfg, temperature=temperature, max_tokens=max_tokens)}
    with _client(cfg, no_daemon) as client:
        done = _run(client, "rewrite", params, None if json_out else sys.stdout)
    if json_out:
        _emit_result(done, True, False)
    elif text.endswith("\n") and not done.text.endswith("\n"):
        print()


# --- the daemon ------------------------------------------------------------------------------------

def serve(
    background: bool = typer.Option(False, "--background", "-b", help="Detach; log to the file beside the socket."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default model for requests that name none."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto | numpy | mlx"),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="Context length."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads for the numpy backend, pinned (default: up to the physical cores, fewer while other programs keep cores busy)."),
    keep_alive: Optional[str] = typer.Option(None, "--keep-alive", help="Unload an idle model after this long (10m, 30s, 0, -1 = never)."),
    socket_path: Optional[str] = typer.Option(None, "--socket", help="Socket path (default: $LOCALAI_SOCKET, else $XDG_RUNTIME_DIR/localai/localai.sock)."),
    http: Optional[str] = typer.Option(None, "--http", help="[HOST:]PORT: also serve the OpenAI and llama-server HTTP API there (host default 127.0.0.1)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Key the HTTP API requires (default: $LOCALAI_API_KEY); needed for a non-loopback --http."),
):
    """Run the daemon that keeps models loaded and serves the CLI, shells and editors."""
    from .. import daemon

    if api_key:  # to a background daemon through its environment, not its command line
        os.environ["LOCALAI_API_KEY"] = api_key
    flags = dict(model=model, backend=backend, n_ctx=n_ctx, threads=threads, keep_alive=keep_alive, http=http)
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
        print(f"model: {m['name']} ({m['arch']} {m['quant']}, {m['backend']}, n_ctx {m['n_ctx']}{idle})")
        pc = m["prompt_cache"]
        print(f"prompt cache: {pc['sessions']} sessions, {_human_bytes(pc['bytes'])}, {pc['hits']} hits")
    print(f"keep-alive: {'never unload' if ka < 0 else _human_time(ka)}; memory: {_human_bytes(st['rss_bytes'])} RSS")
    print(f"requests: {st['requests_served']} served, {st['active']} running, {st['queued']} queued")
    print(f"tokens: {st['tokens_generated']} generated, {st['tokens_evaluated']} evaluated, "
          f"{st['tokens_cached']} from the prompt cache")


COMMANDS = {
    "ask": ask,
    "chat": chat,
    "complete": complete,
    "rewrite": rewrite,
    "serve": serve,
    "stop": stop,
    "status": status,
}
