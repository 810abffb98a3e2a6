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


class _Cursor:
    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise ModelFileError(
                f"{self.path}: the model file is truncated in its header (needed byte {start + n:,}, "
                f"file has {len(self.buf):,}); download it again"
            )
        self.pos += n
        return start

    def scalar(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self.take(size))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > len(self.buf):
            raise ModelFileError(f"{self.path}: corrupt GGUF header (string of {n:,} bytes)")
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if count > len(self.buf):
                raise ModelFileError(f"{self.path}: corrupt GGUF header (array of {count:,} items)")
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
                start = self.take(count * dtype.itemsize)
                return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).copy()
            if etype == _STRING:
                return [self.string() for _ in range(count)]
            if etype == _ARRAY:
                return [self.value(_ARRAY) for _ in range(count)]
        raise ModelFileError(f"{self.path}: corrupt GGUF header (unknown value type {vtype})")


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
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ModelFileError(f"{self.path}: corrupt GGUF header ({n_tensors} tensors, {n_kv} keys)")

        self.metadata: dict = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.scalar("<I"))

        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            if n_dims > 4:
                raise ModelFileError(f"{self.path}: corrupt tensor info for {name!r} ({n_dims} dims)")
            ne = [cur.scalar("<Q") for _ in range(n_dims)]
            infos.append((name, ne, cur.scalar("<I"), cur.scalar("<Q")))

        align = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = (cur.pos + align - 1) // align * align
        self.data_offset = data_start

        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, gtype, rel in infos:
            try:
                qtype = GGMLQuantizationType(gtype)
                block, type_size = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise UnsupportedModel(
                    f"{self.path}: tensor {name!r} has ggml type {gtype}, which this version of localai "
                    "cannot read; re-quantize the model to a common type (Q4_K_M, Q4_0, Q8_0)"
                ) from None
            cols = ne[0] if ne else 1
            rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            if cols % block:
                raise ModelFileError(f"{self.path}: tensor {name!r} row of {cols} is not a multiple of {block}")
            row_bytes = cols // block * type_size
            nbytes = rows * row_bytes
            start = data_start + rel
            if start + nbytes > size:
                raise ModelFileError(
                    f"{self.path}: the model file is truncated: tensor {name!r} needs bytes up to "
                    f"{start + nbytes:,} but the file ends at {size:,}; download it again "
                    "(`localai pull <name>`)"
                )
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
            self.tensors[name] = TensorInfo(name, gtype, shape, start, nbytes, view)

    # -- metadata helpers -------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def arch_get(self, key: str, default=None):
        """`{architecture}.{key}`, e.g. arch_get("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

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
