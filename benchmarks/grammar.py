"""What constrained output costs per token: the grammar's mask (llguidance's bitmask, unpacked
and applied to the logits) and its parser step, beside a plain decode step of the same model
in the same run.

    python benchmarks/grammar.py [--model smollm2] [--answers 5]

Prints one JSON object: mask_ms, accept_ms and decode_ms per step (wall-clock medians), and
the overhead as a fraction of a decode step. On a shared, overloaded machine the wall clock
mostly measures waiting for a core, and the multi-threaded decode step suffers far more than
the single-threaded mask, so the CPU time is reported too: the mask's in its own thread
(`mask_cpu_ms`, llguidance computes it in the calling thread), the decode step's summed over
the process's threads (`decode_cpu_ms`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import localai  # noqa: E402
from localai import grammar  # noqa: E402
from test_grammar import PET  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--answers", type=int, default=5)
    a = ap.parse_args()
    llm = localai.load(a.model, n_ctx=512)
    t0 = time.perf_counter()
    grammar._lltokenizer(llm.tokenizer)
    build_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    grammar.constraint(llm.tokenizer, schema=PET)
    compile_ms = (time.perf_counter() - t0) * 1e3

    mask_t, accept_t, decode_t = [], [], []
    orig_mask, orig_accept, orig_decode = grammar.Constraint.mask, grammar.Constraint.accept, llm.decode_one

    mask_cpu, accept_cpu, decode_cpu = [], [], []

    def timed(store, cpu_store, clock, fn):
        def wrapped(*args):
            t, c = time.perf_counter(), clock()
            out = fn(*args)
            store.append((time.perf_counter() - t) * 1e3)
            cpu_store.append((clock() - c) * 1e3)
            return out
        return wrapped

    grammar.Constraint.mask = timed(mask_t, mask_cpu, time.thread_time, orig_mask)
    grammar.Constraint.accept = timed(accept_t, accept_cpu, time.thread_time, orig_accept)
    llm.decode_one = timed(decode_t, decode_cpu, time.process_time, orig_decode)
    msgs = [{"role": "user", "content": "Describe a pet and its owner as JSON."}]
    session = llm.new_session()
    for seed in range(a.answers):
        llm.chat(msgs, schema=PET, temperature=0.8, seed=seed, max_tokens=96, session=session)
    mask_ms, accept_ms, decode_ms = (statistics.median(x) for x in (mask_t, accept_t, decode_t))
    print(json.dumps({"model": a.model, "n_vocab": llm.n_vocab, "steps": len(mask_t),
                      "vocab_adapter_ms": round(build_ms, 1), "schema_compile_ms": round(compile_ms, 1),
                      "mask_ms": round(mask_ms, 3), "accept_ms": round(accept_ms, 3),
                      "decode_ms": round(decode_ms, 3),
                      "overhead": round((mask_ms + accept_ms) / decode_ms, 4),
                      "mask_cpu_ms": round(statistics.median(mask_cpu), 3),
                      "accept_cpu_ms": round(statistics.median(accept_cpu), 3),
                      "decode_cpu_ms": round(statistics.median(decode_cpu), 3)}))


if __name__ == "__main__":
    main()
