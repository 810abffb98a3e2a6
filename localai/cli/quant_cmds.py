"""Commands that measure and make quantized models: perplexity, quantize."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

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

    from .engine_cmds import local_model

    if kl_divergence and not base:
        raise InvalidRequest("--kl-divergence needs --base MODEL (the model to compare against)")
    if base and not kl_divergence:
        raise InvalidRequest("--base is the model --kl-divergence compares against: add --kl-divergence")
    for m in (model, base):
        if m:
            local_model(m, "perplexity")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{file} is not UTF-8 text") from None
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





def quantize(
    src: Path = typer.Argument(..., help="Input: a GGUF (F32, F16, BF16; quantized only with --allow-requantize) "
                                         "or a Hugging Face model folder (config.json, tokenizer, *.safetensors)."),
    dst: Path = typer.Argument(..., help="Output GGUF."),
    type_name: str = typer.Option(..., "--type", help="Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S, Q6_K, Q8_0, Q4_0, Q4_1, "
                                                            "Q5_0, Q5_1, F16, BF16, F32 (Q4_K, Q5_K: the _M mixes)."),
    pure: bool = typer.Option(False, "--pure", help="Every quantizable tensor gets --type (no per-tensor mix)."),
    leave_output_tensor: bool = typer.Option(False, "--leave-output-tensor", help="Keep output.weight as it is."),
    tensor_type: List[str] = typer.Option([], "--tensor-type", help="NAME=TYPE: tensors whose name matches NAME (regex) get TYPE."),
    allow_requantize: bool = typer.Option(False, "--allow-requantize", help="Accept quantized input (quality suffers)."),
    threads: int = typer.Option(2, "--threads", min=1, help="Threads quantizing chunks of a tensor at the same time."),
):
    """Quantize a model as llama-quantize does (its per-tensor mixes; K-quants bit-exact with llama.cpp).
    OUT is written under a temporary name and renamed once whole: an error or Ctrl-C leaves no
    partial file, and a file already at OUT stays as it was."""
    from ..quantize import quantize_file

    shown = []
    tty = sys.stderr.isatty()

    def progress(done, total, name, typ):  # a bar on a terminal; a log gets nothing until the end
        if tty:
            frac = done / max(total, 1)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {frac:6.1%} {name:<32.32} -> {typ:<5}")
            sys.stderr.flush()
            shown.append(True)

    try:
        try:
            res = quantize_file(src, dst, type_name, pure=pure, leave_output=leave_output_tensor,
                                tensor_types=tensor_type, allow_requantize=allow_requantize, threads=threads,
                                progress=progress)
        finally:
            if shown:  # end the bar's line, whatever came
                sys.stderr.write("\n")
    except (KeyboardInterrupt, SystemExit) as exc:
        print(f"localai: quantize stopped; {dst} was not written", file=sys.stderr)
        raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 143) from None
    types = ", ".join(f"{k}: {v}" for k, v in sorted(res["types"].items()))
    print(f"{dst}: {res['out_bytes'] / 2**20:.1f} MiB (from {res['in_bytes'] / 2**20:.1f} MiB) in "
          f"{res['seconds']:.1f} s; tensors {types}")
COMMANDS = {"perplexity": perplexity, "quantize": quantize}
