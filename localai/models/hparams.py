"""The hyperparameters every architecture reads, with llama.cpp's defaults
(`llama_model_base::load_hparams` in llama-model.cpp), checked against the tensors' shapes.

An architecture file calls `HParams.read(g, ...)` and adds its own keys; a file whose
metadata disagrees with its tensors fails here with one line naming the key, its value and
the tensor shape it contradicts, instead of a reshape error deep in the forward pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFileError


@dataclass
class HParams:
    arch: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int          # attention.key_length, else d_model / n_heads
    head_dim_v: int        # attention.value_length, else d_model / n_heads
    d_ff: int
    n_vocab: int
    norm_eps: float
    rope_base: float       # rope.freq_base, default 10000
    rope_dims: int         # rope.dimension_count, default head_dim
    rope_scale: float      # 1 / rope.scaling.factor (linear position scaling), default 1
    n_ctx_train: int
    window: int | None     # attention.sliding_window (None: no sliding-window layers)
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, g, *, eps_key: str = "attention.layer_norm_rms_epsilon", eps: float | None = None,
             d_ff_required: bool = True) -> "HParams":
        """The common keys of `g` (a GGUFFile), validated against its tensors.
        `eps_key`: the norm epsilon's key (LayerNorm models use attention.layer_norm_epsilon);
        `eps`: its default when the key may be absent (None: required, as llama.cpp has it)."""
        arch = g.architecture
        key = _Keys(g)
        d = key.int("embedding_length")
        H = key.int("attention.head_count")
        if H <= 0:
            raise ModelFileError(f"{g.path}: {arch}.attention.head_count = {H} must be positive")
        Hkv = key.int("attention.head_count_kv", H)
        hd = key.int("attention.key_length", d // H)
        factor = float(key.get("rope.scaling.factor", key.get("rope.scale_linear", 0.0)) or 0.0)
        window = key.get("attention.sliding_window")
        p = cls(
            arch=arch,
            n_layers=key.int("block_count"),
            d_model=d,
            n_heads=H,
            n_kv_heads=Hkv,
            head_dim=hd,
            head_dim_v=key.int("attention.value_length", d // H),
            d_ff=key.int("feed_forward_length") if d_ff_required else key.int("feed_forward_length", 0),
            n_vocab=tensor(g, "token_embd.weight").shape[0],
            norm_eps=float(key.require(eps_key) if eps is None else key.get(eps_key, eps)),
            rope_base=float(key.get("rope.freq_base", 10000.0)),
            rope_dims=key.int("rope.dimension_count", hd),
            rope_scale=1.0 / factor if factor else 1.0,
            n_ctx_train=key.int("context_length", 2048),
            window=int(window) if window else None,
        )
        p.check(g)
        return p

    def swa_layers(self, g, period: int) -> list[bool]:
        """Which layers use the sliding window: `attention.sliding_window_pattern` as a bool
        array, or as a period n (layer i is sliding iff i % n < n - 1), else `period`
        (llama.cpp's load_swa_pattern / set_swa_pattern); all False without a window."""
        if self.window is None:
            return [False] * self.n_layers
        pat = g.get(f"{self.arch}.attention.sliding_window_pattern", period)
        if isinstance(pat, (list, np.ndarray)):
            if len(pat) != self.n_layers:
                raise ModelFileError(
                    f"{g.path}: {self.arch}.attention.sliding_window_pattern has {len(pat)} entries but "
                    f"{self.arch}.block_count = {self.n_layers}")
            return [bool(x) for x in pat]
        n = int(pat)
        return [n == 0 or i % n < n - 1 for i in range(self.n_layers)]

    # -- validation against the tensors --------------------------------------------------
    def check(self, g) -> None:
        a, path = self.arch, g.path
        blocks = {int(m.group(1)) for n in g.tensors if (m := re.match(r"blk\.(\d+)\.", n))}
        if len(blocks) != self.n_layers or (blocks and (min(blocks), max(blocks)) != (0, self.n_layers - 1)):
            have = f"blocks blk.{min(blocks)}..blk.{max(blocks)}" if blocks else "no blocks"
            raise ModelFileError(f"{path}: {a}.block_count = {self.n_layers} but the file has {have} "
                                 f"({len(blocks)} present)")
        for name, t in g.tensors.items():  # every block's tensors are shaped as block 0's
            m = re.match(r"blk\.(\d+)\.(.+)", name)
            if m and m.group(1) != "0":
                first = g.tensors.get(f"blk.0.{m.group(2)}")
                if first is None or tuple(first.shape) != tuple(t.shape):
                    want = "absent" if first is None else f"shaped {tuple(first.shape)}"
                    raise ModelFileError(f"{path}: tensor {name!r} has shape {tuple(t.shape)} but blk.0.{m.group(2)} "
                                         f"is {want}; the file is corrupt")
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ModelFileError(f"{path}: {a}.attention.head_count = {self.n_heads} is not a multiple of "
                                 f"{a}.attention.head_count_kv = {self.n_kv_heads}")
        if self.rope_dims > self.head_dim or self.rope_dims % 2:
            raise ModelFileError(f"{path}: {a}.rope.dimension_count = {self.rope_dims} must be even and at most "
                                 f"the head size {self.head_dim} ({a}.attention.key_length)")
        _expect(g, "token_embd.weight", 1, self.d_model, f"{a}.embedding_length = {self.d_model}")
        hd = f"{a}.attention.key_length (head size) = {self.head_dim}"
        _expect(g, "blk.0.attn_q.weight", 0, self.n_heads * self.head_dim,
                f"{a}.attention.head_count x {hd}: {self.n_heads} x {self.head_dim} = {self.n_heads * self.head_dim}")
        _expect(g, "blk.0.attn_k.weight", 0, self.n_kv_heads * self.head_dim,
                f"{a}.attention.head_count_kv x {hd}: {self.n_kv_heads} x {self.head_dim} = "
                f"{self.n_kv_heads * self.head_dim}")
        _expect(g, "blk.0.attn_v.weight", 0, self.n_kv_heads * self.head_dim_v,
                f"{a}.attention.head_count_kv x value_length: {self.n_kv_heads} x {self.head_dim_v} = "
                f"{self.n_kv_heads * self.head_dim_v}")
        qkv = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        _expect(g, "blk.0.attn_qkv.weight", 0, qkv,
                f"(head_count + 2 x head_count_kv) x head size: ({self.n_heads} + 2 x {self.n_kv_heads}) x "
                f"{self.head_dim} = {qkv}")
        if self.d_ff:
            _expect(g, "blk.0.ffn_down.weight", 1, self.d_ff, f"{a}.feed_forward_length = {self.d_ff}")


class _Keys:
    """`{arch}.{key}` lookups that name the full key in their errors."""

    def __init__(self, g):
        self.g, self.prefix = g, g.architecture + "."

    def get(self, key: str, default=None):
        return self.g.metadata.get(self.prefix + key, default)

    def require(self, key: str):
        return self.g.require(self.prefix + key)

    def int(self, key: str, default=None) -> int:
        v = self.get(key, default) if default is not None else self.require(key)
        if isinstance(v, (list, np.ndarray)):  # per-layer arrays (e.g. head_count_kv): one value for all
            vals = {int(x) for x in v}
            if len(vals) != 1:
                raise ModelFileError(f"{self.g.path}: {self.prefix}{key} varies per layer ({sorted(vals)}); "
                                     "localai runs models whose layers share one value")
            v = vals.pop()
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ModelFileError(f"{self.g.path}: {self.prefix}{key} = {v!r} is not an integer") from None


def tensor(g, name: str):
    """The GGUF tensor `name` of `g`; ModelFileError when the file lacks it."""
    try:
        return g.tensors[name]
    except KeyError:
        raise ModelFileError(f"{g.path}: tensor {name!r} is missing; the file is not a complete "
                             f"{g.architecture} model") from None


def _expect(g, name: str, axis: int, want: int, what: str) -> None:
    """Tensor `name` (numpy shape order: rows first), if present, must be `want` along `axis`."""
    t = g.tensors.get(name)
    if t is None:
        return
    have = t.shape[axis] if axis < len(t.shape) else 1
    if have != want:
        side = "rows" if axis == 0 else "columns"
        raise ModelFileError(f"{g.path}: {what} but tensor {name!r} (shape {tuple(t.shape)}) has {have} {side}")
