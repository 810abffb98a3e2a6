"""GGUF reading through a memory map.

The header is parsed with `struct` straight from the map (gguf-py's `GGUFReader` builds a
numpy view per field and takes 2-10 s on a 262k-token vocabulary; this takes well under a
second). Tensor data is never copied: each tensor is a numpy view into the map, shaped
(rows, bytes per row) for quantized types and (rows, cols) for float types.

Layout (version 2 and 3, little-endian):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv    x  (string key, u32 type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to `general.alignment` (32), then the tensor data
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFileError, UnsupportedModel

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value type id -> (struct format, numpy dtype); 8 = string, 9 = array are handled apart
_SCALARS = {
    0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
    4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
    10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    ggml_type: int        # gguf.GGMLQuantizationType value
    shape: tuple          # numpy order: (rows, cols) for a matrix; GGUF's ne reversed
    offset: int           # absolute byte offset in the file
    nbytes: int
    data: np.ndarray      # uint8 view (rows, row_bytes), or a float view for F32/F16/BF16

    @property
    def type_name(self) -> str:
        from gguf import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"


MAX_ARRAY_DEPTH = 2          # an array of arrays of scalars at most (no model file needs more)
MAX_DIMS = 4                 # GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 16
# the fewest bytes one item of a value type takes in the file (strings: the u64 length)
_MIN_SIZE = {**{t: struct.calcsize(f) for t, (f, _) in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}


class _Cursor:
    """Reads the header from the map; every length and count is checked against the bytes
    left in the file before anything is allocated for it."""

    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def corrupt(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: corrupt GGUF header at byte {self.pos:,}: {what}; "
                              "download the model again")

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise ModelFileError(
                f"{self.path}: the model file is truncated in its header (needed byte {start + n:,}, "
                f"file has {len(self.buf):,}); download it again"
            )
        self.pos += n
        return start

    def scalar(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self.take(size))[0]

    def string(self, what: str = "string") -> str:
        n = self.scalar("<Q")
        if n > self.left():
            raise self.corrupt(f"a {what} of {n:,} bytes, but only {self.left():,} bytes are left")
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int, depth: int = 0):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.corrupt(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if etype not in _MIN_SIZE:
                raise self.corrupt(f"unknown array item type {etype}")
            if count * _MIN_SIZE[etype] > self.left():
                raise self.corrupt(f"an array of {count:,} items, but only {self.left():,} bytes are left")
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
                start = self.take(count * dtype.itemsize)
                return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).copy()
            if etype == _STRING:
                return [self.string() for _ in range(count)]
            return [self.value(_ARRAY, depth + 1) for _ in range(count)]
        raise self.corrupt(f"unknown value type {vtype}")


class GGUFFile:
    """A memory-mapped GGUF file: `metadata` (dict) and `tensors` (name -> TensorInfo)."""

    def __init__(self, path: str | os.PathLike):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = str(path)
        p = Path(path)
        if not p.is_file():
            raise ModelFileError(f"{self.path}: no such model file")
        size = p.stat().st_size
        if size < 24:
            raise ModelFileError(f"{self.path}: not a GGUF file ({size} bytes)")
        with open(p, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = memoryview(self._mmap)
        if bytes(buf[:4]) != GGUF_MAGIC:
            raise ModelFileError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r})")
        cur = _Cursor(buf, self.path)
        cur.take(4)
        self.version = cur.scalar("<I")
        if self.version not in (2, 3):
            raise ModelFileError(f"{self.path}: GGUF version {self.version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        # a key takes >= 8 + 4 + 1 bytes, a tensor info >= 8 + 4 + 8 + 4 + 8
        if n_kv * 13 > cur.left() or n_tensors * 32 > cur.left():
            raise cur.corrupt(f"{n_tensors:,} tensors and {n_kv:,} keys cannot fit in {size:,} bytes")

        self.metadata: dict = {}
        for _ in range(n_kv):
            key = cur.string("key")
            if key in self.metadata:
                raise cur.corrupt(f"key {key!r} appears twice")
            self.metadata[key] = cur.value(cur.scalar("<I"))

        infos = []
        for _ in range(n_tensors):
            name = cur.string("tensor name")
            n_dims = cur.scalar("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise cur.corrupt(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} are possible)")
            ne = [cur.scalar("<Q") for _ in range(n_dims)]
            infos.append((name, ne, cur.scalar("<I"), cur.scalar("<Q")))

        align = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(align, int) or isinstance(align, bool) or not 1 <= align <= MAX_ALIGNMENT \
                or align & (align - 1):
            raise ModelFileError(f"{self.path}: general.alignment is {align!r}: it must be a power of two "
                                 f"up to {MAX_ALIGNMENT}; the file is corrupt")
        data_start = (cur.pos + align - 1) // align * align
        self.data_offset = data_start

        self.tensors: dict[str, TensorInfo] = {}
        spans = []
        for name, ne, gtype, rel in infos:
            if name in self.tensors:
                raise ModelFileError(f"{self.path}: tensor {name!r} appears twice; the file is corrupt")
            try:
                qtype = GGMLQuantizationType(gtype)
                block, type_size = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise UnsupportedModel(
                    f"{self.path}: tensor {name!r} has ggml type {gtype}, which this version of localai "
                    "cannot read; re-quantize the model to a common type (Q4_K_M, Q4_0, Q8_0)"
                ) from None
            bad = self._check_shape(name, ne, block, type_size, size)
            if bad:
                raise ModelFileError(f"{self.path}: tensor {name!r} has shape {ne} ({qtype.name}): {bad}; "
                                     "the file is corrupt")
            cols = ne[0]
            rows = 1
            for n in ne[1:]:
                rows *= n
            row_bytes = cols // block * type_size
            nbytes = rows * row_bytes
            if rel % align:
                raise ModelFileError(f"{self.path}: tensor {name!r} starts at data offset {rel:,}, which is "
                                     f"not a multiple of the alignment {align}; the file is corrupt")
            start = data_start + rel
            if start + nbytes > size:
                raise ModelFileError(
                    f"{self.path}: the model file is truncated: tensor {name!r} needs bytes up to "
                    f"{start + nbytes:,} but the file ends at {size:,}; download it again "
                    "(`localai pull <name>`)"
                )
            itemsize = {GGMLQuantizationType.F32: 4, GGMLQuantizationType.F16: 2}.get(qtype, 1)
            if start % itemsize:
                raise ModelFileError(f"{self.path}: {qtype.name} tensor {name!r} starts at byte {start:,}, "
                                     f"not a multiple of {itemsize}; the file is corrupt")
            spans.append((start, start + nbytes, name))
            raw = np.frombuffer(self._mmap, dtype=np.uint8, count=nbytes, offset=start)
            if qtype == GGMLQuantizationType.F32:
                view = raw.view(np.float32)
            elif qtype == GGMLQuantizationType.F16:
                view = raw.view(np.float16)
            else:
                view = raw
            shape = tuple(reversed(ne))
            if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                view = view.reshape(shape) if len(ne) > 1 else view
            else:
                view = view.reshape(rows, row_bytes)
            view.flags.writeable = False
            self.tensors[name] = TensorInfo(name, gtype, shape, start, nbytes, view)
        spans.sort()
        for (s0, e0, a), (s1, e1, b) in zip(spans, spans[1:]):
            if s1 < e0:
                raise ModelFileError(f"{self.path}: tensors {a!r} (bytes {s0:,}-{e0:,}) and {b!r} (bytes "
                                     f"{s1:,}-{e1:,}) overlap; the file is corrupt")

    @staticmethod
    def _check_shape(name: str, ne: list, block: int, type_size: int, size: int) -> str | None:
        """Why a tensor's dimensions cannot be right, or None."""
        if any(n < 1 for n in ne):
            return "a dimension of 0"
        if ne[0] % block:
            return f"its rows of {ne[0]} are not a multiple of the block size {block}"
        n = 1
        for d in ne:
            n *= d
            if n > size * 64:  # more elements than even 1-bit weights in this file could hold
                return f"more elements than a {size:,}-byte file can hold"
        return None

    # -- metadata helpers -------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def arch_get(self, key: str, default=None):
        """`{architecture}.{key}`, e.g. arch_get("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def arch_int(self, key: str, default=None, lo: int = 1, hi: int = 1 << 20) -> int:
        """`{architecture}.{key}` as an int in [lo, hi] (default when absent and not None);
        ModelFileError naming the key and the value otherwise."""
        full = f"{self.architecture}.{key}"
        v = self.metadata.get(full, default)
        if v is None:
            raise ModelFileError(f"{self.path}: required metadata key {full!r} is missing")
        if isinstance(v, (bool, float, str, list, np.ndarray)) or not isinstance(v, (int, np.integer)) \
                or not lo <= int(v) <= hi:
            raise ModelFileError(f"{self.path}: {full} is {v!r}, not an integer in [{lo}, {hi}]; "
                                 "the file is corrupt")
        return int(v)

    def require(self, key: str):
        if key not in self.metadata:
            raise ModelFileError(f"{self.path}: required metadata key {key!r} is missing")
        return self.metadata[key]

    @property
    def file_type_name(self) -> str:
        from gguf import LlamaFileType

        ft = self.metadata.get("general.file_type")
        if ft is None:
            return "unknown"
        try:
            return LlamaFileType(int(ft)).name.removeprefix("MOSTLY_")
        except ValueError:
            return f"type{ft}"
