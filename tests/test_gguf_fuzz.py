"""Hostile model files (issue 19, item 2): mutated copies of the tiny test models and of the
real SmolLM2 — truncation at every region boundary, bit flips, lying counts, string lengths,
offsets, shapes, and the hyperparameters that once corrupted the heap — must each either load
and generate a few tokens, or be refused with ModelFileError / UnsupportedModel: never a
crash (SIGSEGV, abort), a hang, a traceback of another type or a multi-GB allocation.

Each mutation is loaded in a worker process (numba kernels, RLIMIT_AS 4 GiB); a worker that
dies or stalls is recorded against the mutation it was on and replaced.
`benchmarks/fuzz_gguf.py` runs the same with many random bit flips.
"""
from __future__ import annotations

import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
MEM_LIMIT = 4 << 30


# --- an independent walk over the header: where every field lies ---------------------------------

def header_map(path: str) -> dict:
    """Byte offsets of every count, length and value in a GGUF header, and the data layout."""
    buf = open(path, "rb").read(64 << 20) if os.path.getsize(path) > (64 << 20) else open(path, "rb").read()
    pos = 8
    n_tensors_at, n_kv_at = pos + 0, pos + 8
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, pos)
    pos += 16
    kvs, tensors = [], []

    def skip_value(pos, vtype, rec):
        if vtype in _SCALAR:
            rec.setdefault("value_at", pos)
            return pos + struct.calcsize(_SCALAR[vtype])
        if vtype == 8:
            rec.setdefault("strlen_at", pos)
            return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
        etype, count = struct.unpack_from("<IQ", buf, pos)
        rec.setdefault("count_at", pos + 4)
        pos += 12
        for _ in range(count):
            pos = skip_value(pos, etype, {})
        return pos

    for _ in range(n_kv):
        klen_at = pos
        key = buf[pos + 8: pos + 8 + struct.unpack_from("<Q", buf, pos)[0]].decode()
        pos += 8 + len(key.encode())
        vtype = struct.unpack_from("<I", buf, pos)[0]
        rec = {"key": key, "type": vtype, "keylen_at": klen_at, "type_at": pos}
        pos = skip_value(pos + 4, vtype, rec)
        rec["end"] = pos
        kvs.append(rec)
    kv_end = pos
    for _ in range(n_tensors):
        start = pos
        nlen = struct.unpack_from("<Q", buf, pos)[0]
        name = buf[pos + 8: pos + 8 + nlen].decode()
        pos += 8 + nlen
        n_dims = struct.unpack_from("<I", buf, pos)[0]
        rec = {"name": name, "start": start, "ndims_at": pos, "ne_at": [pos + 4 + 8 * i for i in range(n_dims)]}
        pos += 4 + 8 * n_dims
        rec["ne"] = [struct.unpack_from("<Q", buf, a)[0] for a in rec["ne_at"]]
        rec["type_at"], rec["offset_at"] = pos, pos + 4
        rec["offset"] = struct.unpack_from("<Q", buf, pos + 4)[0]
        pos += 12
        tensors.append(rec)
    align = next((struct.unpack_from("<I", buf, k["value_at"])[0] for k in kvs if k["key"] == "general.alignment"), 32)
    data_start = (pos + align - 1) // align * align
    return {"n_tensors_at": n_tensors_at, "n_kv_at": n_kv_at, "kvs": kvs, "kv_end": kv_end,
            "tensors": tensors, "info_end": pos, "data_start": data_start, "size": os.path.getsize(path)}


# --- mutations: (label, [("patch", offset, hex) | ("truncate", length) | ("flip", offset, bit)]) ------

def u32(v): return struct.pack("<I", v % 2**32).hex()
def u64(v): return struct.pack("<Q", v % 2**64).hex()


def structural_mutations(path: str, arch: str, seed: int = 0, n_flips: int = 40) -> list:
    h = header_map(path)
    rng = random.Random(seed)
    size, kvs, ts = h["size"], h["kvs"], h["tensors"]
    out = []
    # truncation at every region boundary (and one byte either side of the main ones)
    cuts = {0, 4, 8, 16, 24, h["kv_end"], h["info_end"], h["data_start"], size - 1}
    cuts |= {k["end"] for k in kvs[:: max(1, len(kvs) // 12)]} | {t["start"] for t in ts[:: max(1, len(ts) // 8)]}
    cuts |= {h["data_start"] + t["offset"] for t in ts[:: max(1, len(ts) // 8)]}
    cuts |= {c + d for c in (h["kv_end"], h["info_end"], h["data_start"]) for d in (-1, 1)}
    out += [(f"truncate at {c}", [("truncate", c)]) for c in sorted(x for x in cuts if 0 <= x < size)]
    # lying counts
    for v in (0, 1, 2**31, 2**63, 2**64 - 1):
        out.append((f"n_tensors = {v}", [("patch", h["n_tensors_at"], u64(v))]))
        out.append((f"n_kv = {v}", [("patch", h["n_kv_at"], u64(v))]))
    out.append(("n_tensors + 1", [("patch", h["n_tensors_at"], u64(len(ts) + 1))]))
    out.append(("n_kv + 1", [("patch", h["n_kv_at"], u64(len(kvs) + 1))]))
    out.append(("n_kv - 1", [("patch", h["n_kv_at"], u64(len(kvs) - 1))]))
    # lying string lengths and array counts
    for k in [k for k in kvs if "strlen_at" in k][:4] + [kvs[0]]:
        at = k.get("strlen_at", k["keylen_at"])
        for v in (2**62, size, 0):
            out.append((f"{k['key']}: string length {v}", [("patch", at, u64(v))]))
    for k in [k for k in kvs if "count_at" in k]:
        for v in (2**61, size // 8, 0, 1):
            out.append((f"{k['key']}: array count {v}", [("patch", k["count_at"], u64(v))]))
        out.append((f"{k['key']}: array of arrays", [("patch", k["type_at"] + 4, u32(9))]))
    for k in kvs[:: max(1, len(kvs) // 6)]:
        out.append((f"{k['key']}: value type 99", [("patch", k["type_at"], u32(99))]))
    # lying tensor infos: offsets, shapes, types, dims
    for t in ts[:: max(1, len(ts) // 6)] + ts[-1:]:
        n = t["name"]
        for v in (t["offset"] + 1, t["offset"] + 32, 2**63, size):
            out.append((f"{n}: offset {v}", [("patch", t["offset_at"], u64(v))]))
        other = ts[0] if t is not ts[0] else ts[-1]
        out.append((f"{n}: overlaps {other['name']}", [("patch", t["offset_at"], u64(other["offset"]))]))
        out.append((f"{n}: ne[0] x2", [("patch", t["ne_at"][0], u64(t["ne"][0] * 2))]))
        out.append((f"{n}: ne[0] = 0", [("patch", t["ne_at"][0], u64(0))]))
        out.append((f"{n}: ne[0] = 33", [("patch", t["ne_at"][0], u64(33))]))
        out.append((f"{n}: ne[-1] = 2^40", [("patch", t["ne_at"][-1], u64(2**40))]))
        out.append((f"{n}: ne[-1] + 1", [("patch", t["ne_at"][-1], u64(t["ne"][-1] + 1))]))
        out.append((f"{n}: ne[-1] - 1", [("patch", t["ne_at"][-1], u64(t["ne"][-1] - 1))]))
        out.append((f"{n}: n_dims 0", [("patch", t["ndims_at"], u32(0))]))
        out.append((f"{n}: n_dims 9", [("patch", t["ndims_at"], u32(9))]))
        for ty in (0, 1, 8, 2, 12, 99):  # F32, F16, Q8_0, Q4_0, Q4_K, unknown
            out.append((f"{n}: ggml type {ty}", [("patch", t["type_at"], u32(ty))]))
    # hyperparameters that disagree with the tensors (the issue's list, and their neighbours)
    by_key = {k["key"]: k for k in kvs}
    values = {
        "rope.dimension_count": (0, 1, 3, 128, 4096, 2**31, 2**32 - 1),
        "attention.head_count": (0, 1, 7, 2**31),
        "attention.head_count_kv": (0, 5, 2**31),
        "embedding_length": (0, 1, 2**31),
        "block_count": (0, 1000, 2**31),
        "feed_forward_length": (0, 1, 2**31),
        "context_length": (0, 1, 2**31),
        "attention.key_length": (0, 1, 4096),
        "attention.value_length": (0, 1, 4096),
        "attention.sliding_window": (0, 2**31),
    }
    for suffix, vs in values.items():
        k = by_key.get(f"{arch}.{suffix}")
        if k is None or k["type"] not in (4, 5, 10):
            continue
        fmt = {4: u32, 5: u32, 10: u64}[k["type"]]
        out += [(f"{k['key']} = {v}", [("patch", k["value_at"], fmt(v))]) for v in vs]
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "general.alignment"):
        k = by_key.get(key)
        if k is not None and k["type"] == 4:
            out += [(f"{key} = {v}", [("patch", k["value_at"], u32(v))]) for v in (0, 3, 2**31, 2**32 - 1)]
    # random bit flips: header (most of them) and data
    for _ in range(n_flips):
        at = rng.randrange(8, h["data_start"]) if rng.random() < 0.85 else rng.randrange(h["data_start"], size)
        out.append((f"flip bit at {at}", [("flip", at, rng.randrange(8))]))
    return out


def apply(src: str, dst: str, ops: list) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        for op in ops:
            if op[0] == "truncate":
                f.truncate(op[1])
            elif op[0] == "patch":
                f.seek(op[1])
                f.write(bytes.fromhex(op[2]))
            else:
                f.seek(op[1])
                b = f.read(1)
                f.seek(op[1])
                f.write(bytes([b[0] ^ (1 << op[2])]))


# --- the worker: loads each mutation in turn, says how it went ----------------------------------------

def worker(spec_path: str, start: int) -> None:
    import localai
    from localai.errors import ModelFileError, UnsupportedModel

    spec = json.load(open(spec_path))
    for i in range(start, len(spec["mutations"])):
        label, ops = spec["mutations"][i]
        apply(spec["src"], spec["dst"], ops)
        print(json.dumps({"i": i, "state": "start"}), flush=True)
        try:
            llm = localai.load(spec["dst"], n_ctx=32)
            text = llm.generate("Hello", max_tokens=3, temperature=0).text
            res = {"outcome": "ran", "detail": text[:40]}
        except (ModelFileError, UnsupportedModel) as exc:
            res = {"outcome": "refused", "detail": exc.message[-160:]}
            assert "\n" not in exc.message, exc.message
        except BaseException as exc:  # noqa: BLE001 - a traceback is the finding
            res = {"outcome": "error", "detail": f"{type(exc).__name__}: {str(exc)[:160]}"}
        llm = None
        print(json.dumps({"i": i, "state": "end", **res}), flush=True)


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_mutations(src: str, mutations: list, workdir: str, timeout: float = 120.0, env: dict | None = None) -> list:
    """Load every mutation in worker processes; returns one result dict per mutation."""
    spec_path = os.path.join(workdir, "spec.json")
    dst = os.path.join(workdir, "mutated.gguf")
    json.dump({"src": src, "dst": dst, "mutations": mutations}, open(spec_path, "w"))
    results: list = [None] * len(mutations)
    i = 0
    while i < len(mutations):
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", spec_path, str(i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit,
                                env=env or dict(os.environ), text=True, cwd=HERE)
        current, deadline = None, time.monotonic() + timeout * 3  # the first one also imports and compiles
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # a hang
                proc.kill()
                proc.wait()
                results[current if current is not None else i] = {"outcome": "hang"}
                i = (current if current is not None else i) + 1
                break
            line = proc.stdout.readline()
            if not line:  # the worker died (or finished)
                code = proc.wait()
                if current is not None:
                    err = proc.stderr.read()[-300:]
                    results[current] = {"outcome": "crash", "detail": f"exit {code}: {err}"}
                    i = current + 1
                else:
                    i = len(mutations) if all(r is not None for r in results[i:]) else i
                    if code != 0 and results[i:] and results[i] is None:
                        results[i] = {"outcome": "crash", "detail": f"exit {code}: {proc.stderr.read()[-300:]}"}
                        i += 1
                break
            ev = json.loads(line)
            if ev["state"] == "start":
                current, deadline = ev["i"], time.monotonic() + timeout
            else:
                results[ev["i"]] = {k: v for k, v in ev.items() if k not in ("i", "state")}
                current = None
                i = ev["i"] + 1
        proc.stdout.close()
        proc.stderr.close()
    return [{"label": m[0], **r} for m, r in zip(mutations, results)]


def summarize(results: list) -> dict:
    counts: dict = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def _check(results):
    bad = [r for r in results if r["outcome"] not in ("ran", "refused")]
    print(f"gguf fuzz: {len(results)} mutations: {summarize(results)}")
    assert not bad, "\n".join(f"{r['label']}: {r['outcome']} {r.get('detail', '')}" for r in bad)


# --- the tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_mutated_tiny_models_load_or_are_refused(tmp_path, arch):
    sys.path.insert(0, HERE)
    from tiny import write_tiny

    src = str(write_tiny(tmp_path / f"tiny-{arch}.gguf", arch, n_ctx=64))
    muts = structural_mutations(src, arch, seed=1)
    results = run_mutations(src, muts, str(tmp_path))
    _check(results)
    assert summarize(results).get("refused", 0) > len(muts) // 3


SMOLLM2_ISSUE = {  # the mutations the issue found crashing, corrupting or tracebacking
    "llama.rope.dimension_count = 128", "llama.rope.dimension_count = 4096", "llama.rope.dimension_count = 2147483648",
    "llama.attention.head_count = 0", "llama.attention.head_count = 7", "llama.attention.head_count_kv = 5",
    "llama.embedding_length = 1", "token_embd.weight: ne[0] = 0",
}


def test_mutated_smollm2_loads_or_is_refused(tmp_path, smollm2_path):
    muts = structural_mutations(str(smollm2_path), "llama", seed=2, n_flips=6)
    labels = {m[0] for m in muts}
    assert SMOLLM2_ISSUE <= labels, SMOLLM2_ISSUE - labels
    # the issue's list, every truncation boundary and a sample of the rest (the benchmark runs all)
    rng = random.Random(3)
    pick = [m for m in muts if m[0] in SMOLLM2_ISSUE or m[0].startswith("truncate")]
    pick += rng.sample([m for m in muts if m not in pick], 12)
    results = run_mutations(str(smollm2_path), pick, str(tmp_path))
    _check(results)
    by = {r["label"]: r["outcome"] for r in results}
    assert all(by[k] == "refused" for k in SMOLLM2_ISSUE), {k: by[k] for k in SMOLLM2_ISSUE}


def test_bounds_debug_mode_checks_every_kernel_call_and_changes_nothing(tmp_path):
    sys.path.insert(0, HERE)
    from tiny import write_tiny

    src = str(write_tiny(tmp_path / "tiny.gguf", n_ctx=64))
    code = ("import localai, sys; llm = localai.load(sys.argv[1], n_ctx=32); "
            "print(type(llm.model.layers[0].wq).__name__, llm.generate('the cat', max_tokens=5, temperature=0).tokens)")
    outs = {}
    for mode in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", code, src], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, LOCALAI_CHECK_BOUNDS=mode))
        assert r.returncode == 0, r.stderr
        outs[mode] = r.stdout.split(" ", 1)
    assert outs["0"][0] == "QMatrix" and outs["1"][0] == "CheckedMatrix" and outs["0"][1] == outs["1"][1]
    from localai.gguf_file import GGUFFile
    from localai.ops.numpy import CheckedMatrix, matrix

    m = CheckedMatrix(matrix(GGUFFile(src), "token_embd.weight"), "token_embd.weight")
    with pytest.raises(AssertionError, match="outside"):
        m.rows([0, m.shape[0]])
    with pytest.raises(AssertionError, match="expected"):
        m.matmul(np.zeros((1, m.shape[1] + 1), np.float32))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2], int(sys.argv[3]))
