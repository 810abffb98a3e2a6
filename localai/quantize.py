"""Quantize a GGUF model to another GGUF type: `localai quantize IN OUT --type TYPE`.

Which tensors are quantized follows llama.cpp `src/llama-quant.cpp` (`tensor_allows_quantization`):
names ending in `weight`, two or more dimensions, no `_norm.weight`, not `ffn_gate_inp`,
`pos_embd`, `token_types`, and `output.weight` only without `--leave-output-tensor`. The
quantizers for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are gguf-py's (`gguf.quants`, the reference
the C library is tested against), so the output is bit-exact with them.

Not yet done (said so on use, never silently): the K-quants (Q4_K, Q5_K, Q6_K) and the mixes
built on them (Q4_K_M, Q4_K_S, Q5_K_M). llama-quantize stores the output tensor (or a tied
token embedding) of a Q4_0..Q5_1 file as Q6_K; lacking Q6_K we store it as Q8_0 — use `--pure`
to give every tensor the one type.

The input is read through the memory map one tensor at a time (`GGUFFile`) and each result is
written as soon as it is made, so peak memory is a few tensors in float32; metadata (tokenizer, chat template,
rope settings) is copied field by field with gguf-py's `GGUFReader`/`GGUFWriter`, and
`general.file_type` is set to the new type.
"""
from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import InvalidRequest, UnsupportedModel

# --type name -> (default tensor type, general.file_type value: llama.cpp's LLAMA_FTYPE_MOSTLY_*)
FILE_TYPES = {
    "F32": ("F32", 0), "F16": ("F16", 1), "BF16": ("BF16", 32),
    "Q8_0": ("Q8_0", 7), "Q4_0": ("Q4_0", 2), "Q4_1": ("Q4_1", 3), "Q5_0": ("Q5_0", 8), "Q5_1": ("Q5_1", 9),
}
PLANNED = {"Q4_K", "Q5_K", "Q6_K", "Q4_K_M", "Q4_K_S", "Q5_K_M"}  # llama.cpp's reference algorithm, not written yet
FLOAT_INPUT = {"F32", "F16", "BF16"}
# Never quantized (llama-quant.cpp tensor_allows_quantization), by substring of the name.
KEEP = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
        "ssm_conv1d", "shortconv.conv.weight", "time_mix_first.weight", "time_mix_w0.weight")
KEEP_EXACT = ("pos_embd.weight", "token_types.weight")
REQUANTIZE_WARNING = ("requantizing from type {src} is disabled by default; with --allow-requantize the "
                      "result can be severely worse than quantizing from the 16/32-bit source")


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
        if not sep or not name or typ not in FILE_TYPES:
            raise InvalidRequest(f"--tensor-type {s!r}: expected NAME=TYPE with TYPE one of {', '.join(FILE_TYPES)}")
        try:
            out.append((re.compile(name), typ))
        except re.error as exc:
            raise InvalidRequest(f"--tensor-type {s!r}: bad pattern ({exc})") from None
    return out


def choose_type(name: str, n_dims: int, ncols: int, default: str, *, pure: bool, leave_output: bool,
                overrides: list[tuple[re.Pattern, str]], has_output: bool) -> str | None:
    """The new type of one tensor, or None to keep it as it is."""
    if not allows_quantization(name, n_dims, leave_output):
        return None
    new = default
    manual = False
    for pat, typ in overrides:
        if pat.search(name):
            new, manual = typ, True
            break
    if not manual and not pure and new in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        if name == "output.weight" or (not has_output and name == "token_embd.weight"):
            new = "Q8_0"  # llama-quantize: Q6_K (not written yet; see the module docstring)
    T = _tensor_types()
    from gguf import GGML_QUANT_SIZES
    block = GGML_QUANT_SIZES[T[new]][0]
    if ncols % block:
        new = "F16"  # llama.cpp's tensor_type_fallback for rows that do not split into blocks
    return new


def to_float32(t) -> np.ndarray:
    """A tensor's values as float32 (rows, cols), dequantized with gguf-py when quantized."""
    from gguf.quants import dequantize

    T = _tensor_types()
    typ = T(t.ggml_type)
    if typ == T.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(t.shape)
    if typ == T.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(t.shape)
    if typ == T.BF16:
        raw = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
        return raw.view(np.float32).reshape(t.shape)
    return dequantize(np.asarray(t.data), typ).reshape(t.shape)


def quantize_tensor(x: np.ndarray, typ: str) -> np.ndarray:
    """float32 (..., cols) -> the bytes of `typ` (uint8 (..., row_bytes)), or f32/f16/bf16 values."""
    from gguf.quants import quantize

    T = _tensor_types()
    if typ == "BF16":
        from gguf.quants import BF16
        return BF16.quantize(x)
    return quantize(x.astype(np.float32, copy=False), T[typ])


def _copy_metadata(reader, writer, file_type: int) -> None:
    from gguf import GGUFValueType

    for field in reader.fields.values():
        key = field.name
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type",
                                              "general.quantization_version"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    writer.add_uint32("general.quantization_version", 2)
    writer.add_uint32("general.file_type", file_type)


def quantize_file(src: str | Path, dst: str | Path, type_name: str, *, pure: bool = False,
                  leave_output: bool = False, tensor_types: list[str] = (), allow_requantize: bool = False,
                  threads: int = 2, progress=None) -> dict:
    """Write `dst`, a GGUF of `src` quantized to `type_name`. Returns a summary dict
    (n_tensors, n_quantized, types: count per new type, in_bytes, out_bytes, seconds).

    Errors (InvalidRequest / UnsupportedModel, one line): unknown or unwritten type, quantized
    input without `allow_requantize`, `dst` equal to `src`.
    """
    from gguf import GGUFReader, GGUFWriter
    from gguf.quants import quant_shape_to_byte_shape

    from .gguf_file import GGUFFile

    t0 = time.perf_counter()
    type_name = type_name.upper()
    if type_name in PLANNED:
        raise UnsupportedModel(f"--type {type_name} is not implemented yet (K-quants); available: {', '.join(FILE_TYPES)}")
    if type_name not in FILE_TYPES:
        raise InvalidRequest(f"unknown --type {type_name}; available: {', '.join(FILE_TYPES)}")
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InvalidRequest("OUT must differ from IN")
    overrides = parse_tensor_types(list(tensor_types))
    g = GGUFFile(src)
    T = _tensor_types()
    src_types = {t.type_name for t in g.tensors.values()
                 if allows_quantization(t.name, len(t.shape), False)}
    quantized_in = sorted(src_types - FLOAT_INPUT)
    if quantized_in and not allow_requantize:
        raise InvalidRequest(REQUANTIZE_WARNING.format(src=quantized_in[0]) + " (pass --allow-requantize to do it anyway)")
    if quantized_in:
        print("localai: warning: " + REQUANTIZE_WARNING.format(src=quantized_in[0]), file=sys.stderr)
    default, ftype = FILE_TYPES[type_name]
    has_output = "output.weight" in g.tensors
    plan = {}
    for name, t in g.tensors.items():
        plan[name] = choose_type(name, len(t.shape), t.shape[-1], default, pure=pure, leave_output=leave_output,
                                 overrides=overrides, has_output=has_output)

    if not dst.parent.is_dir():
        raise InvalidRequest(f"cannot write {dst}: the folder {dst.parent} does not exist")
    reader = GGUFReader(src)
    try:
        open(dst, "wb").close()
    except OSError as exc:
        raise InvalidRequest(f"cannot write {dst}: {exc.strerror}") from None
    writer = GGUFWriter(dst, g.architecture)
    _copy_metadata(reader, writer, ftype)

    def convert(name):
        t = g.tensors[name]
        new = plan[name]
        if new is None or new == t.type_name:
            return name, np.asarray(t.data), T(t.ggml_type)
        return name, quantize_tensor(to_float32(t), new), T[new]

    names = list(g.tensors)
    counts: dict[str, int] = {}
    for name in names:  # tensor infos first: sizes follow from the planned types
        t = g.tensors[name]
        new = plan[name] if plan[name] not in (None, t.type_name) else None
        if new is None:
            data = np.asarray(t.data)
            shape, dtype, nbytes, typ = data.shape, data.dtype, data.nbytes, T(t.ggml_type)
        else:
            typ = T[new]
            if typ in (T.F32, T.F16):
                shape, dtype = t.shape, np.dtype(np.float32 if typ == T.F32 else np.float16)
                nbytes = int(np.prod(shape)) * dtype.itemsize
            else:
                shape, dtype = quant_shape_to_byte_shape(t.shape, typ), np.dtype(np.uint8)
                nbytes = int(np.prod(shape))
        counts[typ.name] = counts.get(typ.name, 0) + 1
        writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=None if typ in (T.F32, T.F16) else typ)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # numpy releases the GIL in its array loops, so threads over tensors overlap; results are
    # written in file order as they come, so only a few converted tensors are held at once
    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        for done, (name, data, typ) in enumerate(ex.map(convert, names), 1):
            writer.write_tensor_data(data)
            if progress:
                progress(done, len(names), name, typ.name)
    writer.close()
    return {"n_tensors": len(names), "n_quantized": sum(1 for n in names if plan[n] is not None),
            "types": counts, "in_bytes": src.stat().st_size, "out_bytes": dst.stat().st_size,
            "seconds": time.perf_counter() - t0}
