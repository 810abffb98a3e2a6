"""`localai bench`: llama-bench-style figures for one model and backend.

Each repeat runs in a fresh process (so load time and peak RSS are per process), with the
same method as llama.cpp's peer benchmark (shared/bench/peer_bench.py) so the numbers can
be set side by side:
  load      wall time of `localai.load` (memory-mapped GGUF)
  warmup    a 16-token prefill and one decode step (compiles/loads the kernels)
  pp        n_prompt tokens of English text in one fresh session, logits for the last
  tg        prompt "Once upon a time", then n_gen greedy steps (argmax, EOS ignored)
  ttft      time to first token for a ttft_prompt-token prompt: cold (fresh session) and
            warm (the session already holds all but the last ttft_new tokens)
  peak_rss  ru_maxrss of the worker (includes Python, numpy and numba)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from ._spawn import module_argv
from .errors import LocalAIError

LONG_TEXT = (
    "The history of computing is a story of abstraction layered upon abstraction. "
    "Early machines were programmed by rewiring plugboards; later, stored programs "
    "let the same hardware run arbitrary instructions. Assemblers replaced raw "
    "machine code, compilers replaced assemblers, and operating systems arose to "
    "share scarce processors among many users. Each layer hid the complexity of the "
    "one below it while exposing new possibilities above. Today a single line of a "
    "high-level language may expand into thousands of machine instructions, "
    "scheduled across caches, pipelines and cores that the programmer never sees. "
)
KEYS = ("pp_tps", "tg_tps", "ttft_ms_cold", "ttft_ms_warm", "load_s", "peak_rss_mib")


def _text_tokens(llm, n: int) -> list[int]:
    ids: list[int] = []
    reps = 1
    while len(ids) < n:
        ids = llm.tokenize(LONG_TEXT * reps)
        reps *= 2
    return ids[:n]


def worker(model: str, backend: str, threads: int, n_prompt: int, n_gen: int,
           ttft_prompt: int, ttft_new: int, activation_bits: int | str | None = None) -> dict:
    import resource

    import numpy as np

    import localai

    t0 = time.perf_counter()
    llm = localai.load(model, backend=backend, n_threads=threads or None,  # 0: adaptive (kernels.threads)
                       n_ctx=max(2048, n_prompt + 64, ttft_prompt + 64), activation_bits=activation_bits)
    load_s = time.perf_counter() - t0

    s = llm.new_session()  # warmup
    llm.decode_one(s, int(np.argmax(llm.prefill(s, _text_tokens(llm, 16)))))

    ptoks = _text_tokens(llm, n_prompt)
    t0 = time.perf_counter()
    llm.prefill(llm.new_session(), ptoks)
    pp_s = time.perf_counter() - t0

    s = llm.new_session()
    logits = llm.prefill(s, llm.tokenize("Once upon a time"))
    t0 = time.perf_counter()
    for _ in range(n_gen):
        logits = llm.decode_one(s, int(np.argmax(logits)))
    tg_s = time.perf_counter() - t0

    cold_ms = warm_ms = None  # ttft_prompt <= ttft_new: no TTFT test
    if ttft_prompt > ttft_new:
        long = _text_tokens(llm, ttft_prompt)
        t0 = time.perf_counter()
        next(iter(llm.stream(long, max_tokens=1, temperature=0)))
        cold_ms = (time.perf_counter() - t0) * 1e3
        s = llm.new_session()
        llm.prefill(s, long[:-ttft_new])
        t0 = time.perf_counter()
        next(iter(llm.stream(long, max_tokens=1, temperature=0, session=s)))
        warm_ms = (time.perf_counter() - t0) * 1e3

    from . import _blas, kernels

    return {
        "load_s": load_s, "pp_tps": n_prompt / pp_s, "tg_tps": n_gen / tg_s,
        "ttft_ms_cold": cold_ms, "ttft_ms_warm": warm_ms,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "backend": llm.backend, "kernels": kernels.backend() if llm.backend == "numpy" else "-",  # MLX: its own
        "activation_bits": llm.activation_bits,  # x's width in the integer products (numpy; "auto" by size)
        "blas": _blas.describe(), "model_path": str(llm.path),
        "threads": {k: kernels.qmatmul.tuner().state(k) for k in ("decode", "prefill")}
        if llm.backend == "numpy" and kernels.qmatmul.tuner() is not None else {},
        "model_bytes": os.path.getsize(llm.path),
    }


def run(model: str, *, backend: str = "auto", threads: int = 2, n_prompt: int = 512, n_gen: int = 128,
        ttft_prompt: int = 1000, ttft_new: int = 20, repeats: int = 3, progress=None,
        activation_bits: int | str | None = None) -> dict:
    """Run `repeats` fresh worker processes; return {"runs": [...], "summary": {key: {median,min,max}}}.
    threads=0: the engine's default, up to the physical cores, adapted to the load;
    activation_bits: 8 | 16 | "auto" | None ($LOCALAI_ACTIVATION_BITS, else "auto")."""
    from . import store

    path = str(store.resolve(model))  # fetch once, outside the timed workers
    args = {"model": path, "backend": backend, "threads": threads, "n_prompt": n_prompt, "n_gen": n_gen,
            "ttft_prompt": ttft_prompt, "ttft_new": ttft_new, "activation_bits": activation_bits}
    runs = []
    for r in range(repeats):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads)) if threads else dict(os.environ)
        out = subprocess.run(module_argv("localai.bench", json.dumps(args)),
                             capture_output=True, text=True, env=env)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        errors = [ln[6:] for ln in out.stdout.splitlines() if ln.startswith("ERROR ")]
        if errors:  # bad input (a model file, a setting): the worker's one line, not its traceback
            raise LocalAIError(errors[-1])
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"bench worker failed (rc={out.returncode}): {out.stderr.strip()[-2000:]}")
        res = json.loads(lines[-1][7:])
        runs.append(res)
        if progress:
            progress(r, res)
    summary = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
               for k in KEYS for v in [[r[k] for r in runs if r[k] is not None]] if v}
    return {"args": args, "runs": runs, "summary": summary}


def format_table(result: dict) -> str:
    a, s, r0 = result["args"], result["summary"], result["runs"][0]
    rows = [("prefill pp%d" % a["n_prompt"], "pp_tps", "tok/s", 1), ("decode tg%d" % a["n_gen"], "tg_tps", "tok/s", 1),
            ("ttft cold (%d tok)" % a["ttft_prompt"], "ttft_ms_cold", "ms", 1),
            ("ttft warm (+%d tok)" % a["ttft_new"], "ttft_ms_warm", "ms", 1),
            ("load", "load_s", "s", 3), ("peak RSS", "peak_rss_mib", "MiB", 1)]
    out = [f"model={os.path.basename(r0['model_path'])} backend={r0['backend']} kernels={r0['kernels']} "
           f"activation_bits={r0.get('activation_bits')} threads={a['threads'] or 'auto'} repeats={len(result['runs'])} blas={r0.get('blas', 'unknown')}"]
    for label, k, unit, nd in rows:
        if k not in s:
            continue
        v = s[k]
        out.append(f"  {label:22s} {v['median']:.{nd}f} {unit} (min {v['min']:.{nd}f}, max {v['max']:.{nd}f})")
    return "\n".join(out)


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    try:
        print("RESULT " + json.dumps(worker(**a)), flush=True)
    except LocalAIError as exc:
        print("ERROR " + exc.message, flush=True)
        sys.exit(1)
