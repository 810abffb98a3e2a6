"""`localai bench`: prompt processing, generation, time to first token, load time, peak RSS."""
from __future__ import annotations

import json
from typing import Optional

import typer


def bench(
    model: str = typer.Option("smollm2", "--model", "-m"),
    backend: str = typer.Option("auto", "--backend"),
    threads: int = typer.Option(2, "--threads", help="Threads, pinned; 0: the default, adapted to the load."),
    n_prompt: int = typer.Option(512, "--n-prompt", "-p"),
    n_gen: int = typer.Option(128, "--n-gen", "-n"),
    ttft_prompt: int = typer.Option(1000, "--ttft-prompt", help="Prompt tokens for the time-to-first-token test."),
    ttft_new: int = typer.Option(20, "--ttft-new", help="Tokens not yet cached in the warm test."),
    repeats: int = typer.Option(3, "--repeats", "-r"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (medians at the top level)."),
    activation_bits: Optional[str] = typer.Option(None, "--activation-bits", help="8 | 16 | auto (default: "
                                                  "$LOCALAI_ACTIVATION_BITS, else the config's `activation_bits`, else auto)."),
):
    """Measure a model like llama-bench: pp, tg, ttft cold/warm, load time, peak RSS. A path to
    a .gguf file works as MODEL."""
    from .. import bench as B
    from .. import config as _config

    try:  # None: the config file, then $LOCALAI_ACTIVATION_BITS
        bits = _config.load().activation_bits if activation_bits is None else _config.activation_bits_of(activation_bits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--activation-bits") from None

    def progress(i, r):
        if not as_json:
            ttft = ("" if r.get("ttft_ms_cold") is None
                    else f"ttft {r['ttft_ms_cold']:.0f}/{r['ttft_ms_warm']:.0f} ms  ")  # --ttft-prompt 0: none
            print(f"run {i + 1}: load {r['load_s']:.3f}s  pp {r['pp_tps']:.1f} tok/s  tg {r['tg_tps']:.1f} tok/s  "
                  f"{ttft}peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)

    res = B.run(model, backend=backend, threads=threads, n_prompt=n_prompt, n_gen=n_gen,
                ttft_prompt=ttft_prompt, ttft_new=ttft_new, repeats=repeats, progress=progress,
                activation_bits=bits)
    if as_json:
        out = {k: v["median"] for k, v in res["summary"].items()}
        out["activation_bits"] = res["runs"][0].get("activation_bits")  # in effect (16 where no int8 tile)
        out.update(summary=res["summary"], runs=res["runs"], args=res["args"])
        print(json.dumps(out))
    else:
        print(B.format_table(res))


COMMANDS = {"bench": bench}
