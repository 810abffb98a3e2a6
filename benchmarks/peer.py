"""localai and llama.cpp on the same GGUF, in the same run, with the ratios.

llama.cpp is measured by the project's peer benchmark (shared/bench/peer_bench.py) run
with a Python that has llama-cpp-python (build it in its own venv: it compiles llama.cpp,
~8 min on 2 cores):

    python -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install numpy llama-cpp-python
    python benchmarks/peer.py --peer-python /tmp/peervenv/bin/python smollm2 gemma3-270m
    python benchmarks/peer.py --busy-core smollm2   # both under the same load: one core kept busy
    python benchmarks/peer.py /work/cache/bench-models/llama-7b-shaped.Q4_0.gguf   # a path works too

--busy-core runs `python -c "while True: pass"` for the whole run (both engines, every
repeat), as a laptop with another program busy on one core.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PEER_SCRIPT = HERE.parent.parent / "shared" / "bench" / "peer_bench.py"


def ours(model: str, a) -> dict:
    from localai import bench

    res = bench.run(model, threads=a.threads, n_prompt=a.n_prompt, n_gen=a.n_gen, repeats=a.repeats,
                    ttft_prompt=a.ttft_prompt)
    return ({k: v["median"] for k, v in res["summary"].items()}
            | {"_summary": res["summary"], "_blas": res["runs"][0].get("blas", "unknown")})


def peer(path: str, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        r = subprocess.run([a.peer_python, str(a.peer_script), path, "--threads", str(a.threads),
                            "--n-prompt", str(a.n_prompt), "--n-gen", str(a.n_gen), "--repeats", str(a.repeats),
                            "--json", str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"peer benchmark failed:\n{r.stdout}\n{r.stderr}")
        s = json.loads(out.read_text())["summary"]
    return {k: v["median"] for k, v in s.items()} | {"_summary": s}


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
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--ttft-prompt", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy-core", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="keep N cores (default 1) busy with another process during the run")
    p.add_argument("--json", help="write all figures here")
    a = p.parse_args()
    from localai import store

    rows = {}
    for m in a.models:
        path = str(store.resolve(m))  # a catalog name or a path
        with busy_cores(a.busy_core):
            l, c = peer(path, a), ours(path, a)
        rows[m] = {"localai": c, "llama.cpp": l}
        fmt = lambda s, k, nd=1: f"{s[k]['median']:.{nd}f} ({s[k]['min']:.{nd}f}-{s[k]['max']:.{nd}f})"
        print(f"\n{m} ({os.path.basename(path)}), threads={a.threads}, repeats={a.repeats}, busy cores={a.busy_core}, "
              f"localai's BLAS: {c['_blas']}")
        print(f"  {'':18s}{'localai':>24s}{'llama.cpp':>24s}{'ratio':>8s}")
        for label, k, nd in (("decode tok/s", "tg_tps", 1), ("prefill tok/s", "pp_tps", 1),
                             ("load s", "load_s", 3), ("peak RSS MiB", "peak_rss_mib", 0)):
            print(f"  {label:18s}{fmt(c['_summary'], k, nd):>24s}{fmt(l['_summary'], k, nd):>24s}"
                  f"{c[k] / l[k]:>8.2f}")
        print(f"  ttft cold/warm ms  {c['ttft_ms_cold']:.0f} / {c['ttft_ms_warm']:.0f} "
              f"(localai only; {a.ttft_prompt}-token prompt)")
        sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
