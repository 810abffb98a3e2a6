"""A Hugging Face model directory as a quantizer source: `localai quantize HF_DIR OUT.gguf`.

Reads `config.json`, `tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`)
and `*.safetensors` (the `safetensors` package's numpy API; BF16, which numpy lacks, through
the file's own header and a memory map), never torch or transformers. What it writes follows
llama.cpp's converter (`convert_hf_to_gguf.py`, `conversion/base.py`, `llama.py`, `qwen.py`):

- hyperparameters: block_count, context_length, embedding_length, feed_forward_length,
  head_count(_kv), rope freq_base / dimension_count / scaling, rms epsilon, vocab_size;
  Llama 3 rope scaling as the `rope_freqs.weight` tensor (`generate_extra_tensors`);
- tokenizer: byte-level BPE from tokenizer.json (`_set_vocab_gpt2`: tokens in id order,
  `[PAD{i}]` for holes, added special tokens CONTROL, other added tokens USER_DEFINED),
  `tokenizer.ggml.pre` from the pre-tokenizer's regex (llama.cpp hashes a tokenization
  instead; see `PRE_BY_PATTERN`), and gguf-py's `SpecialVocab` for merges, special token
  ids, add_bos/add_eos and the chat template, exactly as the converter calls it;
- tensors: HF names mapped to GGUF names; for `llama`, Q and K rows permuted from HF's
  rotate-half RoPE layout to GGML's interleaved one (`LlamaModel.permute`); 1-D tensors F32,
  matrices in their stored 16/32-bit type until the quantizer converts them.
"""
from __future__ import annotations

import json
import math
import mmap
import re
import struct
from pathlib import Path

import numpy as np

from .errors import InvalidRequest, UnsupportedModel

ARCHITECTURES = {  # config.json "architectures"[0] -> (GGUF architecture, permute Q/K)
    "LlamaForCausalLM": ("llama", True), "LLaMAForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True), "Qwen2ForCausalLM": ("qwen2", False),
}
LAYER_NAMES = {  # HF name inside model.layers.N. -> GGUF name inside blk.N.
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
SKIP = ("rotary_emb.inv_freq",)
# tokenizer.ggml.pre by the pre-tokenizer's split regex (llama.cpp's table is keyed by a hash
# of a tokenization; these are the regexes behind its llama-bpe and qwen2 entries)
PRE_BY_PATTERN = ((r"\p{N}{1,3}", "llama-bpe"), (r"|\p{N}|", "qwen2"))
ST_DTYPES = {"F16": ("F16", np.float16), "F32": ("F32", np.float32), "BF16": ("BF16", np.uint16)}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from None


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half Q/K rows -> GGML's interleaved pairs (convert_hf_to_gguf LlamaModel.permute):
    w (n_head * head_dim, ...) -> same shape, rows of each head reordered."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg: dict, rope_dim: int) -> np.ndarray | None:
    """The `rope_freqs.weight` of Llama 3 rope scaling (rope_dim // 2,) float32, or None."""
    rs = cfg.get("rope_scaling") or {}
    if str(rs.get("rope_type", rs.get("type", ""))).lower() != "llama3":
        return None
    base = cfg.get("rope_theta", 10000.0)
    factor, lo, hi = rs.get("factor", 8.0), rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_ctx = rs.get("original_max_position_embeddings", 8192)
    out = []
    for freq in 1.0 / (base ** (np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / hi:
            out.append(1.0)
        elif wavelen > old_ctx / lo:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


class _SafetensorsFile:
    """One .safetensors file: names, dtypes and shapes via safe_open; data via get_tensor, or
    for BF16 (no numpy dtype) from the header's offsets in a memory map."""

    def __init__(self, path: Path):
        try:
            from safetensors import safe_open
        except ImportError:
            raise UnsupportedModel("reading Hugging Face safetensors needs the safetensors package: "
                                   "pip install 'localai[hf]'") from None
        self.path = path
        self._st = safe_open(str(path), framework="numpy")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.data_start = 8 + n

    def names(self):
        return [k for k in self._st.keys()]

    def info(self, name):
        h = self.header[name]
        return h["dtype"], tuple(h["shape"])

    def get(self, name) -> np.ndarray:
        dtype, shape = self.info(name)
        if dtype != "BF16":
            return self._st.get_tensor(name)
        a, b = self.header[name]["data_offsets"]
        return np.frombuffer(self._mmap, np.uint16, (b - a) // 2, self.data_start + a).reshape(shape)

    def release(self, name):
        a, b = self.header[name]["data_offsets"]
        start = (self.data_start + a) // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, start, self.data_start + b - start)
        except (AttributeError, OSError, ValueError):
            pass


def _as_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def vocabulary(d: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """(tokens, token types, pre-tokenizer name) from tokenizer.json, as `get_vocab_base`."""
    from gguf import TokenType

    tj = _json(d / "tokenizer.json")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UnsupportedModel(f"{d}: only byte-level BPE tokenizer.json files are imported (found "
                               f"{model.get('type') or 'no tokenizer.json'}); convert with llama.cpp's convert_hf_to_gguf.py")
    vocab = dict(model["vocab"])
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    reverse = {i: tok for tok, i in vocab.items()}
    n = max(vocab_size, max(reverse) + 1)
    tokens, types = [], []
    for i in range(n):
        tok = reverse.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
        elif tok in added:
            special = added[tok].get("special") or _looks_special(tok)
            tokens.append(tok if special else tok.replace("\u2581", " "))
            types.append(int(TokenType.CONTROL if special else TokenType.USER_DEFINED))
        else:
            tokens.append(tok)
            types.append(int(TokenType.NORMAL))
    return tokens, types, _pre_name(tj)


def _looks_special(tok: str) -> bool:
    """conversion/base.py does_token_look_special."""
    if tok in ("<pad>", "<mask>", "<2mass>", "[@BOS@]"):
        return True
    return bool((tok.startswith("<|") and tok.endswith("|>")) or (tok.startswith("<｜") and tok.endswith("｜>"))
                or (tok.startswith("[") and tok.endswith("]")))


def _pre_name(tj: dict) -> str:
    pre = tj.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    for p in parts:
        pattern = (p.get("pattern") or {}).get("Regex", "")
        for needle, name in PRE_BY_PATTERN:
            if needle in pattern:
                return name
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


class HFModel:
    def __init__(self, d: Path):
        self.dir = d
        self.cfg = _json(d / "config.json")
        if not self.cfg:
            raise InvalidRequest(f"{d}: not a Hugging Face model directory (no config.json)")
        hf_arch = (self.cfg.get("architectures") or ["?"])[0]
        if hf_arch not in ARCHITECTURES:
            raise UnsupportedModel(f"{d}: architecture {hf_arch} is not imported; supported: {', '.join(ARCHITECTURES)}")
        self.arch, self.permute_qk = ARCHITECTURES[hf_arch]
        files = sorted(d.glob("*.safetensors"))
        if not files:
            raise InvalidRequest(f"{d}: no *.safetensors files (PyTorch .bin checkpoints are not read: no torch)")
        self.files = [_SafetensorsFile(f) for f in files]
        c = self.cfg
        self.n_head = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_head)
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.n_head
        self.n_layer = c["num_hidden_layers"]

    def gguf_name(self, hf: str) -> str | None:
        if hf in GLOBAL_NAMES:
            return GLOBAL_NAMES[hf]
        m = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", hf)
        if m and m.group(2) in LAYER_NAMES:
            return f"blk.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.{m.group(3)}"
        if any(s in hf for s in SKIP):
            return None
        raise UnsupportedModel(f"{self.dir}: tensor {hf} has no GGUF name for {self.arch}")

    def write_metadata(self, w) -> None:
        import gguf

        c = self.cfg
        w.add_name(c.get("_name_or_path") or self.dir.name)
        w.add_block_count(self.n_layer)
        if "max_position_embeddings" in c:
            w.add_context_length(c["max_position_embeddings"])
        w.add_embedding_length(c["hidden_size"])
        w.add_feed_forward_length(c["intermediate_size"])
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_kv)
        rs = c.get("rope_scaling") or {}
        rtype, factor = rs.get("rope_type", rs.get("type")), rs.get("factor")
        if rtype == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rtype == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
        if "rope_theta" in c:
            w.add_rope_freq_base(c["rope_theta"])
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        if self.arch == "llama":
            w.add_vocab_size(c["vocab_size"])
            w.add_rope_dimension_count(self.head_dim)
        tokens, types, pre = vocabulary(self.dir, c.get("vocab_size", 0))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(self.dir, load_merges=True, n_vocab=len(tokens))
        if self.arch == "llama" and c.get("vocab_size") == 49152:
            special.add_special_token["bos"] = False  # the converter's SmolLM rule
        special.add_to_gguf(w, quiet=True)


def hf_source(d: Path):
    """A Source (quantize.py) over a Hugging Face directory."""
    from .quantize import Source, SourceTensor

    m = HFModel(d)
    tensors = {}
    for f in m.files:
        for hf in f.names():
            name = m.gguf_name(hf)
            if name is None:
                continue
            dtype, shape = f.info(hf)
            if dtype not in ST_DTYPES:
                raise UnsupportedModel(f"{d}: tensor {hf} is {dtype}; only F32, F16 and BF16 are imported")
            order = None  # GGUF row i is HF row order[i]
            if m.permute_qk and name.startswith("blk.") and (".attn_q." in name or ".attn_k." in name):
                order = permute(np.arange(shape[0]), m.n_head if ".attn_q." in name else m.n_kv)
            tname = "F32" if len(shape) == 1 else ST_DTYPES[dtype][0]
            tensors[name] = SourceTensor(name, shape, tname, _rows_reader(f, hf, dtype, shape, order),
                                         _raw_reader(f, hf, dtype, shape, order), lambda f=f, hf=hf: f.release(hf))
    factors = llama3_rope_factors(m.cfg, m.head_dim) if m.arch == "llama" else None
    if factors is not None:
        tensors["rope_freqs.weight"] = SourceTensor("rope_freqs.weight", factors.shape, "F32",
                                                    lambda s, a=factors: a, lambda a=factors: a)
    n_bytes = sum(f.path.stat().st_size for f in m.files)
    return Source(m.arch, m.write_metadata, tensors, n_bytes, m.n_layer)


def _read_rows(f: _SafetensorsFile, hf: str, dtype: str, shape: tuple, a: int, b: int) -> np.ndarray:
    """Rows a..b of a stored tensor, reading only those rows."""
    if len(shape) == 1:
        return f.get(hf)[a:b]
    if dtype == "BF16":
        return f.get(hf)[a:b]
    return f._st.get_slice(hf)[a:b]


def _rows_reader(f, hf, dtype, shape, order):
    def rows(s: slice) -> np.ndarray:
        n = shape[0]
        a, b, _ = s.indices(n)
        if order is None:
            return _as_f32(_read_rows(f, hf, dtype, shape, a, b), dtype)
        want = order[a:b]
        lo, hi = int(want.min()), int(want.max()) + 1  # the heads these rows come from
        return _as_f32(_read_rows(f, hf, dtype, shape, lo, hi)[want - lo], dtype)
    return rows


def _raw_reader(f, hf, dtype, shape, order):
    def raw() -> np.ndarray:
        a = f.get(hf)
        if order is not None:
            a = a[order]
        return _as_f32(a, dtype) if len(shape) == 1 else np.ascontiguousarray(a)
    return raw
