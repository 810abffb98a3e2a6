"""localai and llama.cpp on the same GGUF, in the same run, with the ratios.

llama.cpp is measured by the project's peer benchmark (shared/bench/peer_bench.py) run
with a Python that has llama-cpp-python (build it in its own venv: it compiles llama.cpp,
~8 min on 2 cores):

    python -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install numpy llama-cpp-python
    python benchmarks/peer.py --peer-python /tmp/peervenv/bin/python smollm2 gemma3-270m
    python benchmarks/peer.py --busy-core smollm2   # both under the same load: one core kept busy
    python benchmarks/peer.py /work/cache/bench-models/llama-7b-shape.Q4_0.gguf   # a path works too

Each repeat is one fresh process per engine, the two engines interleaved (which goes first
alternates), so a change in the machine's load between minutes falls on both; medians and
min-max over the repeats. Per engine: decode tg (n_gen greedy tokens), prefill pp (n_prompt
tokens in one batch), and the time to first token of a ttft_prompt-token prompt in a fresh
session (llama.cpp: the wall time of that prompt's prefill, a second worker).
llama.cpp runs --threads threads; localai runs its default (`--ours-threads auto`: up to the
physical cores, fewer when that measures faster, kernels/threads.py) or a pinned count.

--busy-core runs `python -c "while True: pass"` for the whole run (both engines, every
repeat), as a laptop with another program busy on one core.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# shared/ next to the checkout (or to its worktrees' folder)
DEFAULT_PEER_SCRIPT = next((p for d in HERE.parents for p in [d / "shared" / "bench" / "peer_bench.py"] if p.exists()),
                           HERE.parent.parent / "shared" / "bench" / "peer_bench.py")


def ours(path: str, a) -> dict:
    """One fresh localai worker process: its figures (bench.worker's keys)."""
    from localai import bench

    res = bench.run(path, threads=0 if a.ours_threads == "auto" else int(a.ours_threads), n_prompt=a.n_prompt,
                    n_gen=a.n_gen, repeats=1, ttft_prompt=a.ttft_prompt)
    return res["runs"][0]


def _peer_run(path: str, a, n_prompt: int, n_gen: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        r = subprocess.run([a.peer_python, str(a.peer_script), path, "--threads", str(a.threads),
                            "--n-prompt", str(n_prompt), "--n-gen", str(n_gen), "--repeats", "1",
                            "--n-ctx", str(max(2048, n_prompt + 64)), "--json", str(out)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"peer benchmark failed:\n{r.stdout}\n{r.stderr}")
        return json.loads(out.read_text())["runs"][0]


def peer(path: str, a) -> dict:
    """One fresh llama.cpp worker (the project's peer benchmark), and, for the time to first
    token, a second one that prefills a ttft_prompt-token prompt: its prefill time is the
    TTFT (the first token's logits come with it; the argmax is not counted)."""
    res = _peer_run(path, a, a.n_prompt, a.n_gen)
    if a.ttft_prompt > 20:  # as localai's (bench: ttft_new = 20)
        res["ttft_ms_cold"] = a.ttft_prompt / _peer_run(path, a, a.ttft_prompt, 1)["pp_tps"] * 1e3
    return res


KEYS = (("decode tok/s", "tg_tps", 1), ("prefill tok/s", "pp_tps", 1), ("ttft cold ms", "ttft_ms_cold", 0),
        ("load s", "load_s", 3), ("peak RSS MiB", "peak_rss_mib", 0))


def summarize(runs: list[dict]) -> dict:
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
            for k in [k for _, k, _ in KEYS] + ["ttft_ms_warm"] for v in [[r[k] for r in runs if r.get(k) is not None]] if v}


@contextlib.contextmanager
def busy_cores(n: int):
    """n processes that each keep one core busy while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["smollm2", "gemma3-270m"])
    p.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", "/tmp/peervenv/bin/python"))
    p.add_argument("--peer-script", default=str(DEFAULT_PEER_SCRIPT))
    p.add_argument("--threads", type=int, default=2, help="llama.cpp's threads (and localai's with --ours-threads N)")
    p.add_argument("--ours-threads", default="auto",
                   help="localai's threads: auto (its default: up to the physical cores, adapted to the load) or N (pinned)")
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--ttft-prompt", type=int, default=1000, help="0 (or up to 20): no time-to-first-token test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy-core", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="keep N cores (default 1) busy with another process during the run")
    p.add_argument("--json", help="write all figures here")
    a = p.parse_args()
    from localai import store

    rows = {}
    for m in a.models:
        path = str(store.resolve(m))  # a catalog name or a path
        runs = {"localai": [], "llama.cpp": []}
        with busy_cores(a.busy_core):
            for r in range(a.repeats):  # interleaved, the first engine alternating
                order = (("llama.cpp", peer), ("localai", ours)) if r % 2 == 0 else (("localai", ours), ("llama.cpp", peer))
                for name, fn in order:
                    runs[name].append(fn(path, a))
                    print(f"  [{m} repeat {r + 1} {name}: " + ", ".join(
                        f"{k} {runs[name][-1][k]:.1f}" for _, k, _ in KEYS[:3] if runs[name][-1].get(k) is not None)
                        + "]", file=sys.stderr, flush=True)
        c, l = summarize(runs["localai"]), summarize(runs["llama.cpp"])
        rows[m] = {"localai": c, "llama.cpp": l, "blas": runs["localai"][0].get("blas", "unknown"),
                   "activation_bits": runs["localai"][0].get("activation_bits")}
        fmt = lambda s, k, nd=1: f"{s[k]['median']:.{nd}f} ({s[k]['min']:.{nd}f}-{s[k]['max']:.{nd}f})"
        print(f"\n{m} ({os.path.basename(path)}), llama.cpp threads={a.threads}, localai threads={a.ours_threads}, "
              f"repeats={a.repeats} (interleaved), busy cores={a.busy_core}, n_prompt={a.n_prompt}, n_gen={a.n_gen}, "
              f"ttft prompt={a.ttft_prompt}, localai's BLAS: {rows[m]['blas']}, "
              f"activation bits: {rows[m]['activation_bits']}")
        print(f"  {'':18s}{'localai':>26s}{'llama.cpp':>26s}{'ratio':>8s}")
        for label, k, nd in KEYS:
            if k in c and k in l:
                print(f"  {label:18s}{fmt(c, k, nd):>26s}{fmt(l, k, nd):>26s}"
                      f"{c[k]['median'] / l[k]['median']:>8.2f}")
        if "ttft_ms_warm" in c:
            print(f"  ttft warm ms      {fmt(c, 'ttft_ms_warm', 0):>26s}   (localai only: +20 tokens on a cached prefix)")
        sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
