"""Commands that run the engine in this process: generate, tokenize, pull, models."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer


def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Raw prompt text, as llama.cpp's: control-token "
                               "text in it (<|im_start|>, <end_of_turn>, ...) becomes control tokens, and no "
                               "chat template is applied. Never pass untrusted text here; `ask` keeps it plain."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Catalog name, path to a .gguf file, or a "
                                        "remote engine's model (default: the config's `model`, else smollm2)."),
    max_tokens: int = typer.Option(128, "--max-tokens", "-n"),
    temperature: float = typer.Option(0.8, "--temperature", "-t"),
    top_k: int = typer.Option(40, "--top-k"),
    top_p: float = typer.Option(0.95, "--top-p"),
    min_p: float = typer.Option(0.05, "--min-p"),
    repeat_penalty: float = typer.Option(1.0, "--repeat-penalty"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    stop: List[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx"),
    backend: str = typer.Option("auto", "--backend"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: text, tokens, finish_reason, timings."),
    schema: Optional[str] = typer.Option(None, "--schema", help="Constrain the output to this JSON schema (a file, or the JSON itself; `object` = any JSON object)."),
    grammar: Optional[str] = typer.Option(None, "--grammar", help="Constrain the output to the GBNF (or Lark) grammar in this file."),
    draft: str = typer.Option("none", "--draft", help="Speculative decoding: none | lookup (drafts copied from the prompt); the same text."),
):
    """Raw text completion, in-process (for scripting). The prompt is raw: control-token text
    in it is parsed (as llama.cpp does); the model's BOS is added, with a warning on stderr
    when the prompt starts with BOS too."""
    import localai

    from .client_cmds import constraint_params

    constrained = constraint_params(schema, grammar)
    from .talk import is_remote

    cfg, model = _config_and_model(model)
    if is_remote(cfg, model):  # a remote engine's model: the daemon forwards it (docs/remote.md)
        _generate_remote(cfg, model, as_json, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                         top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed,
                         stop=stop, **constrained)
        return
    llm = localai.load(model, backend=backend, n_ctx=n_ctx)
    chunks = llm.stream(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop, draft=draft,
                        **constrained)
    text, tokens = [], []
    for c in chunks:
        text.append(c.text)
        tokens.extend(c.tokens)
        if not as_json and c.text:
            sys.stdout.write(c.text)
            sys.stdout.flush()
        if c.finish_reason:
            final = c
    if as_json:
        print(json.dumps({"text": "".join(text), "tokens": tokens, "finish_reason": final.finish_reason,
                          "timings": final.timings.as_dict()}, ensure_ascii=False))
    else:
        sys.stdout.write("\n")


def _config_and_model(model: str | None) -> tuple:
    """(the config, `model` or else the config's `model` or else the catalog's default)."""
    from .. import config, store

    cfg = config.load()
    return cfg, model or cfg.model or store.DEFAULT_MODEL


def local_model(model: str | None, command: str) -> str:
    """`model` (default: the config's `model`, else the catalog's default) for a command that
    reads the model file in this process; a remote engine's model is a one-line error."""
    from ..errors import LocalAIError
    from .talk import is_remote

    cfg, model = _config_and_model(model)
    if is_remote(cfg, model):
        raise LocalAIError(f"{model} is a model of a remote engine ([remotes] in the config); `localai {command}` "
                           f"reads a local model file: name a local model, or use ask, chat or generate")
    return model


def _generate_remote(cfg, model: str, as_json: bool, **params) -> None:
    """`generate` with a remote engine's model, through the daemon; prints as for a local one."""
    from .talk import emit_result, request, say_if_cut, status_of

    streamed = not as_json
    done = request(cfg, False, "generate", {"model": model, **params},
                   out=sys.stdout if streamed else None)
    emit_result(done, as_json, streamed)
    say_if_cut(done, as_json)
    code = status_of(done)
    if code:
        raise typer.Exit(code)


def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Default: the config's `model`, else smollm2."),
    special: bool = typer.Option(False, "--special", help="Parse special-token text such as <|im_start|>."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: tokens (ids) and text."),
):
    """Show how a model tokenizes text."""
    import localai

    model = local_model(model, "tokenize")
    llm = localai.load(model)
    ids = llm.tokenize(text, special=special)
    if as_json:
        print(json.dumps({"tokens": ids, "text": text}, ensure_ascii=False))
        return
    for i in ids:
        print(f"{i:>8}  {llm.tokenizer.token_bytes(i).decode('utf-8', 'backslashreplace')!r}")


def pull(name: str = typer.Argument("smollm2", help="Catalog model name."),
         force: bool = typer.Option(False, "--force", help="Download again even if present.")):
    """Fetch a model into the local store (sha256 checked)."""
    from .. import store

    print(store.pull(name, force=force))


def models(as_json: bool = typer.Option(False, "--json", help="A JSON list of {name, arch, quant, kind, size, path, downloaded}.")):
    """List known and downloaded models."""
    from .. import config, remote, store

    rows = store.list_models()
    remote_rows = remote.list_models(config.load())  # [remotes.NAME]: their /v1/models, cached
    if as_json:
        print(json.dumps(rows + remote_rows))
        return
    print(f"{'NAME':<16}{'ARCH':<10}{'QUANT':<10}{'KIND':<10}{'SIZE':>10}  PATH")
    for r in rows:
        size = f"{r['size'] / 1e6:.0f} MB"
        path = r["path"] if r["downloaded"] else "(not downloaded: localai pull " + r["name"] + ")"
        print(f"{r['name']:<16}{(r['arch'] or '-'):<10}{(r['quant'] or '-'):<10}{(r['kind'] or '-'):<10}{size:>10}  {path}")
    for r in remote_rows:
        if r["listed"]:
            where = "listed by the remote" + (f" {r['age_s']:.0f} s ago" if r["age_s"] else "")
        elif r["aliases"]:
            where = "configured alias"
        else:  # a bare [remotes.NAME]: nothing listed, no alias
            where = f"remote {r['remote']} at {', '.join(r['urls'])}"
        note = f"; unreachable now: {r['error']}" if r["error"] else ""
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']:<36}remote    {where}{alias}{note}")


COMMANDS = {"generate": generate, "tokenize": tokenize, "pull": pull, "models": models}
