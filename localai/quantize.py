"""Quantize a model to another GGUF type: `localai quantize IN OUT --type TYPE`.

IN is a GGUF file or a Hugging Face model directory (`hf_import.py`). Which tensors are
quantized, and to what, follows llama.cpp `src/llama-quant.cpp`:

- `tensor_allows_quantization`: names ending in `weight`, two or more dimensions, no
  `_norm.weight`, not `ffn_gate_inp`, `pos_embd`, `token_types`, and `output.weight` only
  without `--leave-output-tensor`;
- `llama_tensor_get_type`: `--tensor-type` overrides first, then (unless `--pure`) the mix of
  the file type: the output tensor (or the token embedding when it is tied to the output) in
  Q6_K, or Q8_0 when its rows do not split into blocks; for Q4_K_M / Q5_K_M the `attn_v` and
  `ffn_down` of the layers `use_more_bits` picks in Q6_K; for Q4_K_S the first 4 `attn_v` and
  the first eighth of `ffn_down` in Q5_K. Tensors are visited in llama.cpp's order (global
  tensors by name, then layer by layer) because the layer choices count tensors in that order;
- `tensor_type_fallback`: rows that do not split into 256-blocks take Q5_0 / Q5_1 / Q8_0
  for Q4_K / Q5_K / Q6_K, and F16 when they do not split into 32-blocks either.

Quantizers (`quantizers_numba.py`, numba): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 bit-exact with gguf-py's
`gguf.quants` (their numpy twin); Q4_K, Q5_K, Q6_K bit-exact with llama.cpp's reference
quantizer (numpy twin `kquants.py`).

The input is read through the memory map one tensor at a time; each tensor's rows are cut into
chunks quantized on `threads` threads (the numba kernels release the GIL), the result is
written at once while the threads already work on the next tensor's chunks, and the tensor's
pages are handed back to the kernel (`madvise(MADV_DONTNEED)`), so peak memory is about two
output tensors plus a few chunks, whatever the model size. Metadata is copied field by
field and `general.file_type` is set to the new type.
"""
from __future__ import annotations

import mmap
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InvalidRequest

# --type name -> (default tensor type, general.file_type: llama.cpp's LLAMA_FTYPE_MOSTLY_*)
FILE_TYPES = {
    "F32": ("F32", 0), "F16": ("F16", 1), "BF16": ("BF16", 32),
    "Q8_0": ("Q8_0", 7), "Q4_0": ("Q4_0", 2), "Q4_1": ("Q4_1", 3), "Q5_0": ("Q5_0", 8), "Q5_1": ("Q5_1", 9),
    "Q4_K_S": ("Q4_K", 14), "Q4_K_M": ("Q4_K", 15), "Q5_K_S": ("Q5_K", 16), "Q5_K_M": ("Q5_K", 17),
    "Q6_K": ("Q6_K", 18),
}
ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # llama-quantize's aliases
TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
FLOAT_INPUT = {"F32", "F16", "BF16"}
# Never quantized (llama-quant.cpp tensor_allows_quantization), by substring of the name.
KEEP = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
        "ssm_conv1d", "shortconv.conv.weight", "time_mix_first.weight", "time_mix_w0.weight",
        "attn_rel_b.weight")
KEEP_EXACT = ("pos_embd.weight", "token_types.weight")
# tensor_type_fallback: a 256-block type whose rows do not split into 256s
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
BLOCK = {"F32": 1, "F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32,
         "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
REQUANTIZE_WARNING = ("requantizing from type {src} is disabled by default; with --allow-requantize the "
                      "result can be severely worse than quantizing from the 16/32-bit source")
CHUNK_VALUES = 1 << 20  # values per threaded work item


def _tensor_types():
    from gguf import GGMLQuantizationType as T
    return T


def allows_quantization(name: str, n_dims: int, leave_output: bool) -> bool:
    """llama-quant.cpp's rule for which tensors may change type."""
    return (name.endswith("weight") and n_dims >= 2 and not any(k in name for k in KEEP)
            and name not in KEEP_EXACT and not (leave_output and name == "output.weight"))


def parse_tensor_types(specs: list[str]) -> list[tuple[re.Pattern, str]]:
    """`--tensor-type NAME=TYPE` (NAME a regex searched in the tensor name, as llama-quantize)."""
    out = []
    for s in specs:
        name, sep, typ = s.partition("=")
        typ = typ.strip().upper()
        if not sep or not name or typ not in TENSOR_TYPES:
            raise InvalidRequest(f"--tensor-type {s!r}: expected NAME=TYPE with TYPE one of {', '.join(TENSOR_TYPES)}")
        try:
            out.append((re.compile(name), typ))
        except re.error as exc:
            raise InvalidRequest(f"--tensor-type {s!r}: bad pattern ({exc})") from None
    return out


def llama_order(names) -> list[str]:
    """llama.cpp's tensor order (llama_model_loader's weight_name_comparer): layer number
    (global tensors first, as layer -1), then name."""
    def key(n):
        m = re.match(r"blk\.(\d+)\.", n)
        return (int(m.group(1)) if m else -1, n)
    return sorted(names, key=key)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp: the first and last eighth of the layers, and every third in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    """llama-quant.cpp tensor_get_category (the categories the mixes use)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_output.weight", "attn_output"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


# llama_tensor_get_type_impl for the file types we write: (category, file type) ->
# rule(i, n, n_expert) giving the new tensor type or None (keep the default). i counts this
# category's tensors so far, n is their number (attn_v) or the layer count (ffn_down).
MIX_RULES: dict[tuple[str, str], Callable[[int, int, int], str | None]] = {
    ("attn_v", "Q4_K_M"): lambda i, n, e: "Q6_K" if use_more_bits(i, n) else None,
    ("attn_v", "Q5_K_M"): lambda i, n, e: "Q6_K" if use_more_bits(i, n) else None,
    ("attn_v", "Q4_K_S"): lambda i, n, e: "Q5_K" if i < 4 else None,
    ("ffn_down", "Q4_K_M"): lambda i, n, e: "Q6_K" if use_more_bits(i, n) else None,
    ("ffn_down", "Q5_K_M"): lambda i, n, e: "Q6_K" if use_more_bits(i, n) else None,
    ("ffn_down", "Q4_K_S"): lambda i, n, e: "Q5_K" if i < n // 8 else None,
    ("attn_output", "Q4_K_M"): lambda i, n, e: "Q5_K" if e == 8 else None,
    ("attn_output", "Q4_K_S"): lambda i, n, e: "Q5_K" if e == 8 else None,
}
COUNTED = {"attn_v", "ffn_down"}


@dataclass
class Planner:
    """llama_tensor_get_type over a model's tensors, visited in `llama_order`."""
    file_type: str            # a FILE_TYPES key
    n_layer: int              # {arch}.block_count
    n_attn_v: int             # number of attn_v-like tensors
    tied: bool                # no output.weight: token_embd is the output too
    pure: bool = False
    leave_output: bool = False
    overrides: list = field(default_factory=list)
    n_expert: int = 0
    arch: str = "llama"
    seen: dict = field(default_factory=lambda: {"attn_v": 0, "ffn_down": 0})

    def choose(self, name: str, n_dims: int, ncols: int) -> str | None:
        """The new type of one tensor, or None to keep it as it is."""
        if not allows_quantization(name, n_dims, self.leave_output):
            return None
        new = FILE_TYPES[self.file_type][0]
        if new in FLOAT_INPUT:
            return new
        manual = False
        for pat, typ in self.overrides:
            if pat.search(name):
                new, manual = typ, True
                break
        if not manual and not self.pure:
            new = self._mix(name, new, ncols)
        if new in FLOAT_INPUT:
            return new
        if ncols % BLOCK[new]:
            new = FALLBACK.get(new, new)
            if ncols % BLOCK[new]:
                new = "F16"
        return new

    def _mix(self, name: str, new: str, ncols: int) -> str:
        cat = _category(name)
        if cat == "output" or (self.tied and cat == "token_embd"):
            if self.arch == "falcon" or ncols % BLOCK[new]:
                return "Q8_0"
            return new if new == "Q8_0" else "Q6_K"
        if cat == "attn_k" and self.n_expert == 8:
            return "Q8_0"
        rule = MIX_RULES.get((cat, self.file_type))
        if cat in COUNTED:
            i = self.seen[cat]
            self.seen[cat] += 1
            n = self.n_attn_v if cat == "attn_v" else self.n_layer
            if cat == "attn_v" and self.n_expert == 8:
                return "Q8_0"
            if rule and (got := rule(i, n, self.n_expert)):
                return got
            return new
        if rule and (got := rule(0, self.n_layer, self.n_expert)):
            return got
        return new


def plan_types(tensors: list[tuple[str, int, int]], type_name: str, *, n_layer: int, pure: bool = False,
               leave_output: bool = False, overrides=(), n_expert: int = 0, arch: str = "llama") -> dict:
    """{name: new type or None} for tensors [(name, n_dims, ncols)], as llama-quantize chooses."""
    names = [t[0] for t in tensors]
    p = Planner(type_name, n_layer, sum(1 for n in names if _category(n) == "attn_v"),
                "output.weight" not in names, pure, leave_output, list(overrides), n_expert, arch)
    info = {t[0]: t for t in tensors}
    return {n: p.choose(n, info[n][1], info[n][2]) for n in llama_order(names)}


def to_float32(t, rows: slice = slice(None)) -> np.ndarray:
    """A tensor's values (or rows of it) as float32, dequantized with gguf-py when quantized."""
    from gguf.quants import dequantize

    T = _tensor_types()
    typ = T(t.ggml_type)
    data = np.asarray(t.data)
    if data.ndim > 1:
        data = data.reshape(-1, data.shape[-1])[rows]
    if typ == T.F32:
        return np.asarray(data, dtype=np.float32)
    if typ == T.F16:
        return data.view(np.float16).astype(np.float32)
    if typ == T.BF16:
        return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return dequantize(data, typ)


def quantize_tensor(x: np.ndarray, typ: str) -> np.ndarray:
    """float32 (..., cols) -> the bytes of `typ` (uint8 (..., row_bytes)), or f32/f16/bf16 values."""
    from gguf.quants import quantize

    from .kquants import QUANTIZERS, quantize_k
    try:
        from .quantizers_numba import LEGACY, quantize_legacy
    except ImportError:  # numba missing: gguf.quants (the twin) below
        LEGACY = ()

    if typ in QUANTIZERS:
        return quantize_k(x, typ)
    if typ in LEGACY:
        return quantize_legacy(x, typ)
    if typ == "BF16":
        from gguf.quants import BF16
        return BF16.quantize(x)
    return quantize(x.astype(np.float32, copy=False), _tensor_types()[typ])


@dataclass
class SourceTensor:
    """One input tensor: name, numpy-order shape, type name, and how to read rows of it."""
    name: str
    shape: tuple
    type_name: str
    rows: Callable[[slice], np.ndarray]       # rows(slice) -> float32 (n, cols)
    raw: Callable[[], np.ndarray]             # the stored data, for tensors copied as they are
    release: Callable[[], None] = lambda: None  # drop its pages from memory once written


@dataclass
class Source:
    architecture: str
    write_metadata: Callable  # write_metadata(GGUFWriter): every key but architecture and file type
    tensors: dict           # name -> SourceTensor
    n_bytes: int
    n_layer: int
    n_expert: int = 0
    close: Callable[[], None] = lambda: None


def read_metadata(path: Path) -> list:
    """[(key, value, GGUFValueType, array item type or None)] of a GGUF file's key-value section,
    read with GGUFFile's cursor (gguf-py's GGUFReader takes ~40 s on a 49k-token vocabulary)."""
    import struct

    from gguf import GGUFValueType

    from .gguf_file import _ARRAY, _Cursor

    with open(path, "rb") as f:
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    cur = _Cursor(buf, str(path))
    cur.take(4 + 4)
    cur.scalar("<Q")
    n_kv = cur.scalar("<Q")
    out = []
    for _ in range(n_kv):
        key = cur.string("key")
        vtype = cur.scalar("<I")
        sub = GGUFValueType(struct.unpack_from("<I", buf, cur.pos)[0]) if vtype == _ARRAY else None
        value = cur.value(vtype)
        out.append((key, value.tolist() if isinstance(value, np.ndarray) else value, GGUFValueType(vtype), sub))
    return out


def gguf_source(path: Path) -> Source:
    """A GGUF file as a Source: tensors and metadata through GGUFFile's memory map."""
    from .gguf_file import GGUFFile

    g = GGUFFile(path)
    meta = [m for m in read_metadata(path) if not m[0].startswith("GGUF.") and m[0] not in (
        "general.architecture", "general.file_type", "general.quantization_version")]
    page = mmap.PAGESIZE

    def write_metadata(writer):
        for key, value, vtype, sub in meta:
            writer.add_key_value(key, value, vtype, sub_type=sub)

    def release_of(t):
        def release():
            start = t.offset // page * page
            try:
                g._mmap.madvise(mmap.MADV_DONTNEED, start, t.offset + t.nbytes - start)
            except (AttributeError, OSError, ValueError):
                pass
        return release

    tensors = {n: SourceTensor(n, tuple(t.shape), t.type_name, lambda rows, t=t: to_float32(t, rows),
                               lambda t=t: np.asarray(t.data), release_of(t)) for n, t in g.tensors.items()}
    arch = g.architecture
    return Source(arch, write_metadata, tensors, Path(path).stat().st_size, int(g.get(f"{arch}.block_count", 0) or 0),
                  int(g.get(f"{arch}.expert_count", 0) or 0))


def _out_layout(t: SourceTensor, new: str | None):
    """(shape, dtype, nbytes, GGML type) of a tensor as it will be written."""
    from gguf.quants import quant_shape_to_byte_shape

    T = _tensor_types()
    if new is None:
        data = t.raw()
        return data.shape, data.dtype, data.nbytes, T[t.type_name]
    typ = T[new]
    if typ in (T.F32, T.F16):
        dtype = np.dtype(np.float32 if typ == T.F32 else np.float16)
        return t.shape, dtype, int(np.prod(t.shape)) * dtype.itemsize, typ
    shape = quant_shape_to_byte_shape(t.shape, typ)
    return shape, np.dtype(np.uint8), int(np.prod(shape)), typ


def _convert_start(t: SourceTensor, new: str, pool: ThreadPoolExecutor, threads: int) -> Callable[[], np.ndarray]:
    """Queue one tensor's row chunks on the pool (each chunk read, widened to float32 and
    quantized in its worker); returns the call that waits for them and gives the tensor's
    bytes / values."""
    cols = t.shape[-1]
    nrows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
    step = max(1, min(CHUNK_VALUES // max(cols, 1), -(-nrows // max(threads, 1))))
    futures = [pool.submit(lambda s: quantize_tensor(t.rows(s).reshape(-1, cols), new), slice(a, min(a + step, nrows)))
               for a in range(0, nrows, step)]

    def finish() -> np.ndarray:
        parts = [f.result() for f in futures]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out.reshape(*t.shape[:-1], out.shape[-1]) if len(t.shape) > 1 else out.reshape(-1)
    return finish


def open_source(src: Path) -> Source:
    if src.is_dir():
        from .hf_import import hf_source
        return hf_source(src)
    if not src.exists():
        raise InvalidRequest(f"{src}: no such file or directory")
    return gguf_source(src)


def quantize_file(src: str | Path, dst: str | Path, type_name: str, *, pure: bool = False,
                  leave_output: bool = False, tensor_types: list[str] = (), allow_requantize: bool = False,
                  threads: int = 2, progress=None) -> dict:
    """Write `dst`, a GGUF of `src` (a GGUF file or a Hugging Face model directory) quantized to
    `type_name`. Returns a summary dict (n_tensors, n_quantized, types: count per new type,
    in_bytes, out_bytes, seconds). `progress(done_bytes, total_bytes, name, type)` is called
    after each tensor.

    Errors (InvalidRequest / UnsupportedModel, one line): unknown type, quantized input without
    `allow_requantize`, `dst` equal to `src`, unwritable `dst`.
    """
    t0 = time.perf_counter()
    type_name = ALIASES.get(type_name.upper(), type_name.upper())
    if type_name not in FILE_TYPES:
        raise InvalidRequest(f"unknown --type {type_name}; available: {', '.join([*FILE_TYPES, *ALIASES])}")
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):  # the same path, a symlink or a hard link
        raise InvalidRequest("OUT must differ from IN")
    overrides = parse_tensor_types(list(tensor_types))
    if not dst.parent.is_dir():
        raise InvalidRequest(f"cannot write {dst}: the folder {dst.parent} does not exist")
    source = open_source(src)
    plan = plan_types([(n, len(t.shape), t.shape[-1]) for n, t in source.tensors.items()], type_name,
                      n_layer=source.n_layer, pure=pure, leave_output=leave_output, overrides=overrides,
                      n_expert=source.n_expert, arch=source.architecture)
    plan = {n: (None if new == source.tensors[n].type_name else new) for n, new in plan.items()}
    unmatched = [pat.pattern for pat, _ in overrides
                 if not any(pat.search(n) and allows_quantization(n, len(t.shape), leave_output)
                            for n, t in source.tensors.items())]
    if unmatched:  # a typo would otherwise go unnoticed: the file is still written, without it
        print(f"localai: warning: --tensor-type {', '.join(map(repr, unmatched))} matched no quantizable tensor "
              f"in {src.name}; ignored", file=sys.stderr)
    requant = sorted({source.tensors[n].type_name for n, new in plan.items()
                      if new is not None and source.tensors[n].type_name not in FLOAT_INPUT})
    if requant and not allow_requantize:
        raise InvalidRequest(REQUANTIZE_WARNING.format(src=requant[0]) + " (pass --allow-requantize to do it anyway)")
    if requant:
        print("localai: warning: " + REQUANTIZE_WARNING.format(src=requant[0]), file=sys.stderr)
    # written beside dst under a temporary name, renamed over dst once whole: an error, Ctrl-C
    # or SIGTERM leaves no half-written file and keeps a file already at dst
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    try:
        open(tmp, "wb").close()
    except OSError as exc:
        raise InvalidRequest(f"cannot write {dst}: {exc.strerror}") from None
    try:
        with _sigterm_exits():
            summary = _write(source, tmp, type_name, plan, threads, progress)
        os.replace(tmp, dst)
    except OSError as exc:
        raise InvalidRequest(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        source.close()
        if tmp.exists():
            tmp.unlink()
    return {**summary, "in_bytes": source.n_bytes, "out_bytes": dst.stat().st_size,
            "seconds": time.perf_counter() - t0}


@contextmanager
def _sigterm_exits():
    """SIGTERM raises SystemExit(143) while the file is written (its default kills the process
    before any cleanup); only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _write(source, dst: Path, type_name: str, plan: dict, threads: int, progress) -> dict:
    """The GGUF of `source` with the planned types, to dst; the summary's counts."""
    from gguf import GGUFWriter

    T = _tensor_types()
    writer = GGUFWriter(dst, source.architecture)
    source.write_metadata(writer)
    writer.add_uint32("general.quantization_version", 2)
    writer.add_uint32("general.file_type", FILE_TYPES[type_name][1])

    names = list(plan)  # llama.cpp's order
    counts: dict[str, int] = {}
    sizes = {}
    for name in names:  # tensor infos first: sizes follow from the planned types
        shape, dtype, nbytes, typ = _out_layout(source.tensors[name], plan[name])
        counts[typ.name] = counts.get(typ.name, 0) + 1
        sizes[name] = int(np.prod(source.tensors[name].shape))
        writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=None if typ in (T.F32, T.F16) else typ)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total, done = sum(sizes.values()), 0
    if any(new not in (None, "F32", "F16", "BF16") for new in plan.values()):
        try:
            from .quantizers_numba import warmup
        except ImportError:  # numba missing: the numpy twins
            warmup = None
        if warmup:
            warmup()  # compile (first run, seconds) or load the kernels once, before the threads
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        def start(name):
            t, new = source.tensors[name], plan[name]
            return t.raw if new is None else _convert_start(t, new, pool, threads)
        ahead = start(names[0]) if names else None
        for i, name in enumerate(names):
            t, new = source.tensors[name], plan[name]
            finish = ahead
            # queue the next tensor's chunks first: the threads work on it while this one is
            # gathered and written (no idle pool during the write, no tail at each tensor's end)
            ahead = start(names[i + 1]) if i + 1 < len(names) else None
            data = finish()
            writer.write_tensor_data(data)
            del data
            t.release()
            done += sizes[name]
            if progress:
                progress(done, total, name, new or t.type_name)
    writer.close()
    return {"n_tensors": len(names), "n_quantized": sum(1 for n in names if plan[n] is not None),
            "types": counts}
