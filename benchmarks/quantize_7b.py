"""F16 -> Q4_K_M on LLaMA-7B-shaped tensors: `localai quantize` next to llama-quantize.

    python benchmarks/quantize_7b.py DIR [--layers N] [--llama-quantize PATH] [--threads 2]

Writes DIR/llama-7b-shape.F16.gguf (random N(0, 0.02) weights in LLaMA-7B's shapes: d 4096,
FFN 11008, 32 heads, vocabulary 32000, separate output matrix; `--layers` of the 32, the
token embedding and output always whole), quantizes it with both tools (`/usr/bin/time`:
wall seconds, CPU seconds and peak RSS), checks the two outputs hold the same tensors, prints one JSON
line and deletes the big files. With fewer layers the time scales by the values written:
the `values` field gives the count, 6.74e9 for the whole model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

sys.path.insert(0, str(Path(__file__).parent))
from make_7b import vocabulary  # noqa: E402

D, FF, HEADS, VOCAB, N_LAYERS = 4096, 11008, 32, 32000, 32


def write_f16(path: Path, layers: int) -> int:
    rng = np.random.default_rng(0)
    w = GGUFWriter(str(path), "llama")
    w.add_name("llama-7b-shape-random-f16")
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(D // HEADS)
    w.add_file_type(1)
    tokens, scores, types = vocabulary(VOCAB)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    shapes = {"token_embd.weight": (VOCAB, D), "output_norm.weight": (D,), "output.weight": (VOCAB, D)}
    for i in range(layers):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (D,), p + "ffn_norm.weight": (D,), p + "attn_q.weight": (D, D),
                       p + "attn_k.weight": (D, D), p + "attn_v.weight": (D, D), p + "attn_output.weight": (D, D),
                       p + "ffn_gate.weight": (FF, D), p + "ffn_up.weight": (FF, D), p + "ffn_down.weight": (D, FF)})
    dtype = {1: np.float32, 2: np.float16}
    for name, shape in shapes.items():
        dt = np.dtype(dtype[len(shape)])
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape in shapes.items():
        if len(shape) == 1:
            w.write_tensor_data(np.ones(shape, np.float32))
        else:
            w.write_tensor_data((rng.standard_normal(shape, np.float32) * 0.02).astype(np.float16))
    w.close()
    return sum(int(np.prod(s)) for s in shapes.values() if len(s) == 2)


def timed(cmd: list[str], env=None) -> tuple[float, int, float]:
    """(wall s, peak RSS bytes, CPU s = user + system) of one command, from /usr/bin/time."""
    out = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M %U %S", *cmd], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("TIME ")][-1]
    secs, kb, user, system = line.split()[1:]
    return float(secs), int(kb) * 1024, round(float(user) + float(system), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--layers", type=int, default=N_LAYERS)
    ap.add_argument("--llama-quantize", default="/work/cache/llama-build/bin/llama-quantize")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    src, ours, theirs = (a.dir / f"llama-7b-shape.{n}.gguf" for n in ("F16", "ours.Q4_K_M", "llama.Q4_K_M"))
    values = write_f16(src, a.layers)
    localai = str(Path(sys.executable).parent / "localai")
    t_ours, rss_ours, cpu_ours = timed([localai, "quantize", str(src), str(ours), "--type", "Q4_K_M", "--threads", str(a.threads)])
    env = dict(os.environ, LD_LIBRARY_PATH=str(Path(a.llama_quantize).parent))
    t_llama, rss_llama, cpu_llama = timed([a.llama_quantize, str(src), str(theirs), "Q4_K_M", str(a.threads)], env=env)
    same = subprocess.run([sys.executable, "-c", SAME, str(ours), str(theirs)], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"layers": a.layers, "values": values, "f16_bytes": src.stat().st_size,
                      "ours_s": t_ours, "ours_cpu_s": cpu_ours, "ours_peak_rss": rss_ours,
                      "llama_s": t_llama, "llama_cpu_s": cpu_llama, "llama_peak_rss": rss_llama,
                      "ratio": round(t_ours / t_llama, 2), "cpu_ratio": round(cpu_ours / cpu_llama, 2), "same_tensors": same, "threads": a.threads}))
    if not a.keep:
        for p in (src, ours, theirs):
            p.unlink(missing_ok=True)


SAME = """
import sys, numpy as np
from localai.gguf_file import GGUFFile
a, b = GGUFFile(sys.argv[1]), GGUFFile(sys.argv[2])
print(list(a.tensors) == list(b.tensors) and all(t.type_name == b.tensors[n].type_name and
      np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(b.tensors[n].data).view(np.uint8))
      for n, t in a.tensors.items()))
"""

if __name__ == "__main__":
    main()
