"""What users of Ollama expect around models: `ps` (what the daemon has loaded, its memory,
until when), `show MODEL` (what a model file is), `rm MODEL` (delete it from the store)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from .. import protocol
from ..errors import LocalAIError, ModelNotFound

SOCKET = typer.Option(None, "--socket", help="Socket path of the daemon.")


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def _span(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def loaded_models(st: dict) -> list[dict]:
    """The daemon's status -> one row per loaded model: name, arch, quant, backend, n_ctx,
    memory_bytes (the mapped file + its prompt cache), busy, and until (Unix time it unloads,
    None = never or while busy)."""
    ka, now, rows = st["keep_alive_s"], time.time(), []
    for m in st["models"]:
        try:
            size = os.path.getsize(m["path"])
        except OSError:
            size = 0
        until = None if m["busy"] or ka < 0 else now + max(0.0, ka - m["idle_s"])
        rows.append({"name": m["name"], "arch": m["arch"], "quant": m["quant"], "backend": m["backend"],
                     "n_ctx": m["n_ctx"], "memory_bytes": size + m["prompt_cache"]["bytes"], "busy": m["busy"],
                     "until": until, "path": m["path"]})
    return rows


def ps(json_out: bool = typer.Option(False, "--json", help="Print a JSON list of the loaded models."),
       socket_path: Optional[str] = SOCKET):
    """Show the models the daemon has loaded: memory, and until when they stay loaded."""
    from ..client import Client, NotRunning

    try:
        with Client(socket_path or protocol.socket_path(), autostart=False) as c:
            st = c.call("status")
    except NotRunning:
        if json_out:
            print("[]")
        else:
            print("no model is loaded: the localai daemon is not running")
        return
    rows = loaded_models(st)
    if json_out:
        print(json.dumps(rows))
        return
    if not rows:
        print(f"no model is loaded (the next request loads {st['default_model']})")
        return
    print(f"{'NAME':<16}{'MODEL':<16}{'MEMORY':>10}  {'BACKEND':<8}{'CONTEXT':>8}  UNTIL")
    for r in rows:
        if r["busy"]:
            until = "busy now"
        elif r["until"] is None:
            until = "forever (keep_alive -1)"
        else:
            until = f"{time.strftime('%H:%M:%S', time.localtime(r['until']))} (in {_span(r['until'] - time.time())})"
        print(f"{r['name']:<16}{r['arch'] + ' ' + r['quant']:<16}{_mb(r['memory_bytes']):>10}  "
              f"{r['backend']:<8}{r['n_ctx']:>8}  {until}")


def describe(path: str) -> dict:
    """What a GGUF file is: name, arch, quant, context length, kind (base | instruct), chat
    template (the file's, or the built-in used instead), size, path."""
    from .. import store
    from ..chat_template import builtin_template_name
    from ..gguf_file import GGUFFile

    g = GGUFFile(path)
    template = g.get("tokenizer.chat_template")
    return {"name": str(g.get("general.name") or Path(path).stem), "arch": g.architecture,
            "quant": g.file_type_name, "context_length": int(g.arch_get("context_length") or 0) or None,
            "kind": store.model_kind(g.metadata),
            "template": builtin_template_name(template if isinstance(template, str) else None, g.architecture),
            "template_source": "file" if isinstance(template, str) and template else "built-in",
            "size": os.path.getsize(path), "path": str(path)}


def show(model: str = typer.Argument(..., help="Catalog name, a name in the store, or a path to a .gguf."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
         template: bool = typer.Option(False, "--template", help="Print the file's chat template (Jinja) and exit.")):
    """Show what a model is: architecture, quant type, context length, base or instruct, chat template."""
    from .. import store
    from .engine_cmds import local_model

    local_model(model, "show")
    path = os.path.abspath(store.resolve(model, pull_missing=False))  # absolute, whatever the user typed
    info = describe(path)
    if template:
        from ..gguf_file import GGUFFile

        source = GGUFFile(path).get("tokenizer.chat_template")
        if not source:
            raise LocalAIError(f"{model} carries no chat template; localai uses its built-in `{info['template']}`")
        print(source)
        return
    if json_out:
        print(json.dumps(info))
        return
    kind = ("instruct (ask, chat, rewrite and complete take it)" if info["kind"] == "instruct"
            else "base (continues text: generate and complete only)")
    ctx = f"{info['context_length']:,} tokens (trained)" if info["context_length"] else "unknown"
    if info["template_source"] == "file":
        chat_template = f"{info['template']} (from the file; `localai show {model} --template` prints it)"
    elif info["kind"] == "base":
        chat_template = "none (a base model)"
    else:
        chat_template = f"{info['template']} (built-in: the file has none)"
    for label, value in (("name", info["name"]), ("architecture", info["arch"]), ("quantization", info["quant"]),
                         ("context", ctx), ("kind", kind), ("chat template", chat_template),
                         ("size", _mb(info["size"])), ("path", info["path"])):
        print(f"{label + ':':<15}{value}")


def rm(model: str = typer.Argument(..., help="Catalog name or a model's name in the store.")):
    """Delete a downloaded model from the store (never a file outside it)."""
    from .. import store

    store_dir = store.models_dir()
    entry = store.catalog_entry(model)
    if entry is not None:
        path = store_dir / entry.filename
    else:
        cands = [store_dir / model, store_dir / f"{model}.gguf"]
        path = next((c for c in cands if c.is_file()), cands[0])
        if os.path.realpath(path.parent) != os.path.realpath(store_dir) or Path(model).name != model:
            raise LocalAIError(f"`localai rm` deletes models in the store ({store_dir}) by name only; "
                               f"{model!r} is not one: delete a file elsewhere yourself")
    if not path.is_file():
        raise ModelNotFound(f"{model!r} is not in the store ({store_dir}): `localai models` lists what is")
    size = path.stat().st_size
    path.unlink()
    print(f"deleted {model}: {path} ({_mb(size)} freed)")


COMMANDS = {"ps": ps, "show": show, "rm": rm}
