"""The bodies of the commands that send one request and print its answer (`ask`, `complete`,
`run`), and what they share with the other client commands: sampling defaults, Ctrl-C,
printing the result, saying when an answer was cut.

No Typer here, nothing heavy: the Typer commands (client_cmds) and the instant path
(localai.cli.fast, which parses argv by hand) both call these functions, so the two give the
same output and exit codes. Each returns the exit status.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager

from ..errors import LocalAIError
from . import user_input

EXIT_CANCELLED = 130  # Ctrl-C, as a shell reports a program stopped by SIGINT


def constraint_params(schema: str | None, grammar: str | None) -> dict:
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


def client_for(cfg, no_daemon: bool):
    if no_daemon:
        from ..daemon.inprocess import InProcessClient  # the engine loads here, on purpose

        return InProcessClient(cfg)
    from ..client import Client

    return Client()


def fetch_model(model: str | None, cfg=None) -> None:
    """A catalog model that is not downloaded yet is fetched here, with progress; a name or
    path that names no model fails here with a clear message. A model of a remote engine
    (`[remotes.NAME]` in the config) needs nothing here."""
    from .. import store

    if cfg is not None and is_remote(cfg, model):
        return
    store.resolve(model or store.DEFAULT_MODEL)


def is_remote(cfg, model: str | None) -> bool:
    """Whether `model` names a remote engine's model (`[remotes.NAME]` in the config)."""
    if not (model and cfg.remotes):
        return False
    from .. import remote

    return remote.route(cfg, model) is not None


def model_arg(model: str | None, cfg=None) -> str | None:
    """A model path made absolute (the daemon runs elsewhere); a catalog name, or a remote
    engine's `NAME/MODEL` or alias, as it is."""
    if cfg is not None and is_remote(cfg, model):
        return model
    if model and (model.endswith(".gguf") or os.sep in model or model.startswith(".") or model.startswith("~")):
        return os.path.abspath(os.path.expanduser(model))
    return model


def request(cfg, no_daemon: bool, method: str, params: dict, out=None):
    """Run one request through the daemon (or in this process) and return its Done event.
    When the daemon has not got the model, it is fetched here (a catalog model is pulled with
    progress; an unknown one is a clear error) and the request sent once more: the common
    case, a model on disk, costs the client no look-up at all."""
    from ..client import DaemonError

    with client_for(cfg, no_daemon) as client:
        try:
            return run(client, method, params, out)
        except DaemonError as exc:
            if no_daemon or exc.code != "model_not_found":
                raise
            if is_remote(cfg, params.get("model")):  # in the config file, not in the running daemon's
                from ..errors import LocalAIError

                raise LocalAIError(f"{params['model']} is a remote engine's model in the config file, but the "
                                   f"running daemon read the config before that: run `localai stop` (the next "
                                   f"request starts it again with the new config)") from None
    fetch_model(params.get("model"), cfg)
    with client_for(cfg, no_daemon) as client:
        return run(client, method, params, out)


# ask and chat answer people: a cooler, less repetitive default than the engine's raw
# llama.cpp defaults (small models loop at 0.8). The config file and flags override these.
ASSISTANT_SAMPLING = {"temperature": 0.3, "top_p": 0.9}


def sampling(cfg, assistant: bool = False, **flags) -> dict:
    out = dict(ASSISTANT_SAMPLING) if assistant else {}
    out.update(cfg.sampling)
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


@contextmanager
def ctrl_c_cancels(client):
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


def run(client, method: str, params: dict, out=None):
    """Send a request, write its text to `out` as it streams; returns the Done event."""
    done = None
    with ctrl_c_cancels(client) as (sent, hit):
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


def emit_result(done, json_out: bool, streamed: bool, out=None) -> None:
    out = out or sys.stdout
    if json_out:
        print(json.dumps({"text": done.text, "finish_reason": done.finish_reason, "model": done.model,
                          "timings": done.timings}, ensure_ascii=False), file=out)
        return
    if not streamed:
        out.write(done.text)
    if not done.text.endswith("\n"):
        out.write("\n")
    out.flush()


def cut_note(n_tokens) -> str:
    """The line on stderr under an answer cut by the token limit."""
    return (f"localai: the answer was cut at the token limit ({n_tokens} tokens): raise it with "
            f"--max-tokens (-n) or `max_tokens` in the config file")


def say_if_cut(done, json_out: bool = False) -> None:
    """An answer cut by the token limit says so on stderr (JSON output has finish_reason)."""
    if done.finish_reason == "length" and not json_out:
        print(cut_note((done.timings or {}).get("predicted_n")), file=sys.stderr, flush=True)


def status_of(done) -> int:
    return EXIT_CANCELLED if done.finish_reason == "cancelled" else 0


# --- ask -----------------------------------------------------------------------------------------

def ask(question=None, model=None, system=None, temperature=None, max_tokens=None, no_stream=False,
        json_out=False, no_daemon=False, schema=None, grammar=None, draft=None) -> int:
    from .. import config as _config

    cfg = _config.load()
    constrained = constraint_params(schema, grammar)
    text = " ".join(question or []).strip()
    piped = user_input.read_stdin()
    if piped.strip():
        text = f"{text}\n\n{piped}" if text else piped
    if not text.strip():
        raise LocalAIError('nothing to ask: give a question (`localai ask "..."`) or pipe text in')
    messages = []
    if system or cfg.system:
        messages.append({"role": "system", "content": system or cfg.system})
    messages.append({"role": "user", "content": text})
    streamed = not (no_stream or json_out)
    params = {"messages": messages, "model": model_arg(model or cfg.model, cfg), "stream": streamed, **constrained,
              **sampling(cfg, assistant=True, temperature=temperature, max_tokens=max_tokens, draft=draft)}
    done = request(cfg, no_daemon, "chat", params, sys.stdout if streamed else None)
    emit_result(done, json_out, streamed)
    say_if_cut(done, json_out)
    return status_of(done)


# --- complete ------------------------------------------------------------------------------------

# done fields of `complete` -> what they count
DROPPED = {"dropped_prefix_tokens": "tokens at the start of the prefix",
           "dropped_suffix_tokens": "tokens at the end of the suffix",
           "dropped_extra": "extra chunks"}


def complete(prefix=None, suffix=None, file=None, line=None, column=1, model=None, temperature=None,
             max_tokens=None, json_out=False, no_daemon=False, draft=None) -> int:
    from .. import config as _config

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
        prefix = user_input.read_stdin()
    params = {"prefix": prefix, "suffix": suffix or "", "model": model_arg(model or cfg.model, cfg),
              "stream": not json_out, "temperature": temperature, "max_tokens": max_tokens, "draft": draft}
    done = request(cfg, no_daemon, "complete", params, None if json_out else sys.stdout)
    dropped = {k: getattr(done, k) for k in DROPPED if getattr(done, k)}
    if json_out:
        print(json.dumps({"text": done.text, "finish_reason": done.finish_reason, "model": done.model,
                          "timings": done.timings, **dropped}, ensure_ascii=False))
        return status_of(done)
    if not done.text.endswith("\n"):  # the output ends with a line break, as every command's
        print(flush=True)
    if dropped:
        said = ", ".join(f"{n} {DROPPED[k]}" for k, n in dropped.items())
        print(f"localai: the context is full: left out {said}", file=sys.stderr)
    say_if_cut(done)
    return status_of(done)


# --- run: a named action -------------------------------------------------------------------------

def run_action(name: str, text=None, file=None, line=None, column=None, model=None, temperature=None,
               max_tokens=None, json_out=False, instruction=None, shell=None, last_command=None,
               last_status=None, no_daemon=False, with_output=False) -> int:
    """`localai run NAME [TEXT]`: the daemon runs the action (built-in or the user's) and this
    prints its post-processed result. TEXT, else stdin, is the action's text (stdin is also
    passed as ctx.stdin). Returns the exit status. Both the Typer command and the instant
    path call this."""
    from .. import config as _config
    from ..actions_client import action_params, run_action as _run_action, shell_name
    from ..client import DaemonError

    cfg = _config.load()
    words = (" ".join(text) if isinstance(text, (list, tuple)) else (text or "")).strip()
    piped = user_input.read_stdin()
    params = action_params(name, text=words or piped or None, file=file, line=line, column=column,
                           stdin=piped or None, instruction=instruction, shell=shell or shell_name(),
                           last_command=last_command, last_status=last_status,
                           model=model_arg(model, cfg), temperature=temperature, max_tokens=max_tokens)

    def go():
        with client_for(cfg, no_daemon) as client:
            return _run_action(client, params)

    try:
        try:
            out = go()
        except DaemonError as exc:
            if no_daemon or exc.code != "model_not_found":
                raise
            fetch_model(params.get("model"), cfg)  # a catalog model not pulled yet: fetch, then again
            out = go()
    except DaemonError as exc:
        raise LocalAIError(exc.message) from None
    except KeyboardInterrupt:  # closing the connection stops the request in the daemon
        return EXIT_CANCELLED
    if json_out:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if out["finish_reason"] == "cancelled":
        return EXIT_CANCELLED
    result = out["text"]
    if not result.strip():
        raise LocalAIError(f"the `{name}` action gave no usable result (the model said {out['answer'].strip()[:120]!r})")
    if with_output:
        sys.stdout.write(f"{out['output']}\n")
    sys.stdout.write(result if result.endswith("\n") else result + "\n")
    sys.stdout.flush()
    if out["finish_reason"] == "length":
        print(cut_note((out.get("timings") or {}).get("predicted_n")), file=sys.stderr)
    return 0
