"""Commands that measure and make quantized models: perplexity, quantize."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def perplexity(
    file: Path = typer.Argument(..., help="Text file to score (UTF-8)."),
    model: str = typer.Option("smollm2", "--model", "-m", help="Catalog name or path to a .gguf file."),
    ctx: int = typer.Option(512, "--ctx", "-c", help="Tokens per chunk (llama-perplexity's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", help="Score at most this many chunks."),
    kl_divergence: bool = typer.Option(False, "--kl-divergence", help="Also compare against --base: KLD, same top, Δp."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (e.g. the F16 file) for --kl-divergence."),
    backend: str = typer.Option("auto", "--backend"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: ppl, ppl_error, n_chunks, n_ctx, ..."),
):
    """Perplexity of a model on a text, computed as llama.cpp's llama-perplexity does."""
    import localai
    from ..errors import InvalidRequest
    from ..perplexity import format_kld, perplexity as run

    if kl_divergence and not base:
        raise InvalidRequest("--kl-divergence needs --base MODEL (the model to compare against)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}") from None
    llm = localai.load(model, backend=backend, n_ctx=max(ctx, 8))
    ref = localai.load(base, backend=backend, n_ctx=max(ctx, 8)) if kl_divergence else None

    def show(i, p):
        sys.stdout.write(f"[{i}]{p:.4f},")
        sys.stdout.flush()

    res = run(llm, text, ctx, n_chunks=chunks, base=ref, on_chunk=None if as_json else show)
    if as_json:
        print(json.dumps(res.as_dict()))
        return
    print()
    print(f"Final estimate: PPL = {res.ppl:.4f} +/- {res.ppl_error:.5f}")
    if res.kld is not None:
        print()
        print(format_kld(res.kld))


COMMANDS = {"perplexity": perplexity}
