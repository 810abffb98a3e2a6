"""The engine: one loaded model, its tokenizer and chat template, and generation.

Generation has named phases, as gpt-fast: `prefill` (the prompt, in batches), `decode_one`
(one token through the KV cache), `stream` (sample, detokenize, stop) and `generate`
(collect a stream). A `Session` is a KV cache plus the tokens in it; passing the same
session to successive calls reuses the longest common prefix, which is what the daemon's
prompt cache is built on.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import _malloc, kernels, store
from .chat_template import render as render_chat
from .errors import ContextOverflow, InvalidRequest, UnsupportedModel
from .gguf_file import GGUFFile
from .sampling import SamplingParams, make_sampler
from .stops import StopMatcher
from .tokenizer import StreamDecoder, from_gguf

N_BATCH = 512          # prompt tokens per forward pass during prefill
DEFAULT_N_CTX = 4096   # capped by the model's training context
# backend name -> module exposing model_class(arch); models take and return numpy arrays:
# model(tokens, cache, last_only) -> logits, model.make_cache(max_len) -> per-layer caches
# with .offset, .trim(n), .nbytes.
BACKENDS = {"numpy": "localai.models", "mlx": "localai.mlx"}


@dataclass
class Timings:
    prompt_n: int = 0         # prompt tokens evaluated
    cache_n: int = 0          # prompt tokens reused from the session's KV cache
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Chunk:
    text: str
    tokens: list = field(default_factory=list)
    finish_reason: str | None = None   # on the last chunk: "eos" | "stop" | "length"
    timings: Timings | None = None


@dataclass
class Completion:
    text: str
    tokens: list
    finish_reason: str
    timings: Timings


class Session:
    """A KV cache and the token ids it holds (positions 0..len(tokens)-1)."""

    def __init__(self, model, max_len: int):
        self.cache = model.make_cache(max_len)
        self.tokens: list[int] = []

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cache)

    def keep(self, n: int) -> None:
        """Roll back to the first n cached tokens."""
        n = min(n, len(self.tokens))
        del self.tokens[n:]
        for c in self.cache:
            c.trim(n)

    def common_prefix(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n


def resolve_backend(backend: str) -> str:
    """"auto" -> "mlx" on Apple Silicon with Metal, else "numpy"; "mlx" where MLX is missing
    or broken -> "numpy", saying so on stderr; other names are checked against BACKENDS."""
    import platform
    import sys

    from . import mlx as mlx_backend  # imports MLX only inside problem()

    if backend == "auto":
        apple = sys.platform == "darwin" and platform.machine() == "arm64"
        return "mlx" if apple and mlx_backend.problem(metal=True) is None else "numpy"
    if backend not in BACKENDS:
        raise UnsupportedModel(f"unknown backend {backend!r} (choose auto, {', '.join(BACKENDS)})")
    if backend == "mlx" and (why := mlx_backend.problem()) is not None:
        print(f"localai: the MLX backend cannot run here ({why}); using numpy instead. Install MLX "
              "with `pip install mlx` (macOS) or `pip install 'mlx[cpu]'` (Linux).", file=sys.stderr)
        return "numpy"
    return backend


def backend_module(backend: str):
    import importlib

    try:
        return importlib.import_module(BACKENDS[backend])
    except ImportError as exc:
        raise UnsupportedModel(f"the {backend} backend is not available: {exc}") from None


class LLM:
    """A loaded model. Made by `localai.load`; see the package docstring."""

    def __init__(self, path: str | Path, *, backend: str = "auto", n_ctx: int | None = None,
                 n_threads: int | None = None, name: str | None = None):
        t0 = time.perf_counter()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.backend = resolve_backend(backend)
        if self.backend == "numpy":  # the numba kernels are the numpy backend's alone
            _malloc.configure()
            kernels.set_threads(n_threads)  # None: the physical cores
            kernels.warmup()  # compile (or load from numba's cache) now, not on the first token
        self.gguf = g = GGUFFile(self.path)
        self.arch = g.architecture
        self.quant = g.file_type_name
        self.model = backend_module(self.backend).model_class(self.arch)(g)
        self.tokenizer = from_gguf(g)
        self.n_vocab = self.model.args.n_vocab
        train = int(self.model.args.n_ctx_train)
        self.n_ctx = int(n_ctx) if n_ctx else min(train, DEFAULT_N_CTX)
        if self.n_ctx < 8:
            raise InvalidRequest(f"n_ctx={self.n_ctx} is too small")
        self.chat_template = g.get("tokenizer.chat_template")
        self.load_s = time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"LLM({self.name!r}, arch={self.arch}, quant={self.quant}, n_ctx={self.n_ctx}, backend={self.backend})"

    # -- text <-> tokens ------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False, add_bos: bool | None = None) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special=skip_special)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        bos = tok.token_bytes(tok.bos_id).decode("utf-8", "replace") if tok.bos_id is not None else ""
        eos = tok.token_bytes(tok.eos_id).decode("utf-8", "replace") if tok.eos_id is not None else ""
        text = render_chat(messages, template=self.chat_template, bos_token=bos, eos_token=eos,
                           add_generation_prompt=add_generation_prompt, arch=self.arch)
        if tok.add_bos and bos and text.startswith(bos):
            text = text[len(bos):]  # the tokenizer adds BOS itself; don't send two
        return text

    def fim_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        """Fill-in-the-middle prompt (prefix-suffix-middle order), or None without FIM tokens."""
        fim = self.tokenizer.fim
        if not all(k in fim for k in ("prefix", "suffix", "middle")):
            return None
        bos = [self.tokenizer.bos_id] if self.tokenizer.add_bos else []
        return (bos + [fim["prefix"]] + self.tokenize(prefix, add_bos=False)
                + [fim["suffix"]] + self.tokenize(suffix, add_bos=False) + [fim["middle"]])

    # -- forward passes -------------------------------------------------------------
    def new_session(self) -> Session:
        return Session(self.model, self.n_ctx)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of `ids` (a fresh cache): float32 (len(ids), n_vocab)."""
        ids = self._check_ids(ids)
        if len(ids) > self.n_ctx:
            raise ContextOverflow(f"{len(ids)} tokens do not fit in the context of {self.n_ctx}")
        session = self.new_session()
        out = [self.model(np.asarray(ids[i:i + N_BATCH]), session.cache) for i in range(0, len(ids), N_BATCH)]
        return np.concatenate(out, axis=0)

    def prefill(self, session: Session, ids: Sequence[int]) -> np.ndarray:
        """Evaluate ids after what the session holds; return the last position's logits (n_vocab,)."""
        logits = None
        for i in range(0, len(ids), N_BATCH):
            batch = list(ids[i:i + N_BATCH])
            logits = self.model(np.asarray(batch), session.cache, last_only=True)
            session.tokens.extend(batch)
        return logits[-1]

    def decode_one(self, session: Session, token: int) -> np.ndarray:
        logits = self.model(np.asarray([token]), session.cache, last_only=True)
        session.tokens.append(token)
        return logits[-1]

    def _check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")
        return ids

    # -- generation -----------------------------------------------------------------
    def stream(self, prompt: str | Sequence[int], *, max_tokens: int = 256, temperature: float = 0.8,
               top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
               repeat_last_n: int = 64, seed: int | None = None, stop: Sequence[str] = (),
               session: Session | None = None) -> Iterator[Chunk]:
        """Generate from a prompt (text, special tokens parsed, or token ids), one token per step."""
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed)
        return self._stream(prompt, params, int(max_tokens), list(stop or ()), session)

    def _stream(self, prompt, params: SamplingParams, max_tokens: int, stop: list[str],
                session: Session | None) -> Iterator[Chunk]:
        if max_tokens < 0:
            raise InvalidRequest("max_tokens must be >= 0")
        sampler = make_sampler(params)
        ids = self.tokenize(prompt, special=True) if isinstance(prompt, str) else self._check_ids(prompt)
        if not ids:
            raise InvalidRequest("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise ContextOverflow(
                f"the prompt is {len(ids)} tokens but the context holds {self.n_ctx}; "
                "shorten it or load the model with a larger n_ctx")
        session = session or self.new_session()
        timings = Timings()
        t0 = time.perf_counter()
        # Reuse the cached prefix, but always evaluate at least one token to get logits.
        keep = min(session.common_prefix(ids), len(ids) - 1)
        session.keep(keep)
        timings.cache_n, timings.prompt_n = keep, len(ids) - keep
        logits = self.prefill(session, ids[keep:])
        timings.prompt_ms = (time.perf_counter() - t0) * 1e3

        decoder, matcher = StreamDecoder(self.tokenizer, render_special=False), StopMatcher(stop)
        history = list(ids)
        eog = self.tokenizer.eog_ids
        t1 = time.perf_counter()
        finish = "length"
        while True:
            if timings.predicted_n >= max_tokens:
                break
            token = sampler(logits, history)
            if token in eog:
                finish = "eos"
                break
            history.append(token)
            timings.predicted_n += 1
            text, stopped = matcher.push(decoder.push(token))
            if stopped:
                finish = "stop"
                break
            yield Chunk(text, [token])  # text may be "" (held back); one chunk per decode step
            if timings.predicted_n >= max_tokens or len(session.tokens) >= self.n_ctx:
                break
            logits = self.decode_one(session, token)
        timings.predicted_ms = (time.perf_counter() - t1) * 1e3
        tail = ""
        if finish != "stop":
            tail, stopped = matcher.push(decoder.flush())
            if stopped:
                finish = "stop"
            else:
                tail += matcher.flush()
        yield Chunk(tail, [], finish_reason=finish, timings=timings)

    def stream_chat(self, messages: list[dict], **kwargs) -> Iterator[Chunk]:
        return self.stream(self.apply_chat_template(messages), **kwargs)

    def generate(self, prompt: str | Sequence[int], **kwargs) -> Completion:
        return _collect(self.stream(prompt, **kwargs))

    def chat(self, messages: list[dict], **kwargs) -> Completion:
        return _collect(self.stream_chat(messages, **kwargs))


def _collect(chunks: Iterator[Chunk]) -> Completion:
    text, tokens = [], []
    for c in chunks:
        text.append(c.text)
        tokens.extend(c.tokens)
        if c.finish_reason:
            return Completion("".join(text), tokens, c.finish_reason, c.timings)
    raise RuntimeError("stream ended without a final chunk")


def load(model: str = store.DEFAULT_MODEL, *, backend: str = "auto", n_ctx: int | None = None,
         n_threads: int | None = None) -> LLM:
    path = store.resolve(model)
    name = model if not store.looks_like_path(model) else None
    return LLM(path, backend=backend, n_ctx=n_ctx, n_threads=n_threads, name=name)
