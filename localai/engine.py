"""The engine: one loaded model, its tokenizer and chat template, and generation.

Generation has named phases, as gpt-fast: `prefill` (the prompt, in batches), `decode_one`
(one token through the KV cache), `stream` (sample, detokenize, stop) and `generate`
(collect a stream). A `Session` is a KV cache plus the tokens in it; passing the same
session to successive calls reuses the longest common prefix, which is what the daemon's
prompt cache is built on.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import _malloc, kernels, store
from .chat_template import render_parts as render_chat_parts
from .errors import ContextOverflow, InvalidRequest, UnsupportedModel
from .gguf_file import GGUFFile
from .sampling import SamplingParams, logprobs_entry, make_sampler
from .stops import StopMatcher
from .tokenizer import StreamDecoder, from_gguf

log = logging.getLogger("localai")

N_BATCH = 512          # prompt tokens per forward pass during prefill
DEFAULT_N_CTX = 4096   # capped by the model's training context
DRAFTS = ("none", "lookup", "model")  # stream(draft=...); the protocol adds "auto" (daemon/handlers.py)
# backend name -> module exposing model_class(arch); models take and return numpy arrays:
# model(tokens, cache, last_only) -> logits (last_only: False = every row, True = the last,
# an int index array = those rows), model.make_cache(max_len) -> per-layer caches
# with .offset, .trim(n), .nbytes.
BACKENDS = {"numpy": "localai.models", "mlx": "localai.mlx"}


@dataclass
class Timings:
    prompt_n: int = 0         # prompt tokens evaluated
    cache_n: int = 0          # prompt tokens reused from the session's KV cache
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    draft_n: int = 0          # draft tokens proposed (speculative decoding)
    draft_accepted_n: int = 0  # of those, the ones the sampler agreed with

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Chunk:
    text: str
    tokens: list = field(default_factory=list)
    finish_reason: str | None = None   # on the last chunk: "eos" | "stop" | "length"
    timings: Timings | None = None
    logprobs: list | None = None       # with stream(logprobs=k): one sampling.logprobs_entry per token


@dataclass
class Eval:
    """A forward pass a stream asks for when made with `stream(..., evals=True)`: evaluate
    `ids` after what `session` holds (appending them to `session.tokens`), and send the stream
    the logits of the last position, float32 (n_vocab,) (`LLM.evaluate` does both). `save`:
    None for a prompt chunk before the last one (its logits are not used; send None), "prefill"
    for the last prompt chunk, "decode" for a generated token, "verify" for a generated token
    and its drafts (send every position's logits, (len(ids), n_vocab)); the daemon's scheduler
    interleaves several streams' passes and batches their decode steps (localai/batch.py)."""
    session: "Session"
    ids: list
    save: str | None


@dataclass
class Completion:
    text: str
    tokens: list
    finish_reason: str
    timings: Timings


class Session:
    """A KV cache and the token ids it holds (positions 0..len(tokens)-1), plus the logits
    of a few positions it evaluated: {n: float32 (n_vocab,) logits of position n-1}, at most
    the end of the last prefill and the last position. A request whose prompt the session
    holds whole re-uses those logits instead of evaluating its last token again: a token
    evaluated alone gives logits ~1e-3 away from the batched prefill's, which can change a
    greedy answer."""

    def __init__(self, model, max_len: int):
        self.cache = model.make_cache(max_len)
        self.tokens: list[int] = []
        self.saved_logits: dict[int, np.ndarray] = {}
        self.prefill_end = 0  # len(tokens) after the last prefill

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cache) + sum(a.nbytes for a in self.saved_logits.values())

    def keep(self, n: int) -> None:
        """Roll back to the first n cached tokens."""
        n = min(n, len(self.tokens))
        del self.tokens[n:]
        for c in self.cache:
            c.trim(n)
        self.saved_logits = {k: v for k, v in self.saved_logits.items() if k <= n}

    def _save_logits(self, logits: np.ndarray, prefill: bool) -> np.ndarray:
        # a copy (a backend may hand out a view of a buffer it reuses), read-only: a later
        # request samples from these same logits, so no sampler may change them in place
        logits = np.array(logits, dtype=np.float32, copy=True)
        logits.flags.writeable = False
        n = len(self.tokens)
        if prefill:
            self.prefill_end, self.saved_logits = n, {n: logits}
        else:
            self.saved_logits = {k: v for k, v in self.saved_logits.items() if k == self.prefill_end}
            self.saved_logits[n] = logits
        return logits

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
                 n_threads: int | None = None, name: str | None = None, activation_bits: int | str | None = None):
        t0 = time.perf_counter()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.backend = resolve_backend(backend)
        self.gguf = g = GGUFFile(self.path)
        self.n_params = sum(math.prod(t.shape) for t in g.tensors.values())
        self.activation_bits = None  # x's width in the integer products (numpy backend)
        if self.backend == "numpy":  # the numba kernels are the numpy backend's alone
            _malloc.configure()
            kernels.set_threads(n_threads)  # None: the physical cores
            from .ops import numpy as numpy_ops
            # for this model's matrices, made below ("auto": by its size)
            numpy_ops.set_activation_bits(activation_bits, self.n_params)  # a bad value fails before the compile
            kernels.warmup()  # compile (or load from numba's cache) now, not on the first token
            self.activation_bits = numpy_ops.activation_bits_in_effect()  # 16 if the compile failed
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
        self.kind = store.model_kind(g.metadata)  # "base" | "instruct"
        self.load_s = time.perf_counter() - t0

    def __repr__(self) -> str:
        return f"LLM({self.name!r}, arch={self.arch}, quant={self.quant}, n_ctx={self.n_ctx}, backend={self.backend})"

    # -- text <-> tokens ------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`. special=True parses control-token text (a raw prompt, as
        llama.cpp's); a result that starts with two BOS is warned about on stderr, as
        llama.cpp does."""
        ids = self.tokenizer.encode(text, add_bos=add_bos, special=special)
        bos = self.tokenizer.bos_id
        if special and len(ids) > 1 and ids[0] == ids[1] == bos and (add_bos or add_bos is None and self.tokenizer.add_bos):
            log.warning("localai: warning: the model adds BOS and the prompt also starts with BOS, so it "
                        "now starts with two BOS tokens: leave the BOS text out of the prompt")
        return ids

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special=skip_special)

    def check_can_chat(self) -> None:
        """Raise UnsupportedModel for a base model: chat-style requests refuse it in one line
        (its fallback template only makes it loop; see store.model_kind). Rendering a template
        (`apply_chat_template`, `chat_tokens`) is not refused: it is how a prompt is inspected."""
        if self.kind == "base":
            raise UnsupportedModel(
                f"{self.name} is a base model (no chat template, not instruction-tuned): it continues text "
                f"but cannot chat or follow instructions; use an instruct model (--model smollm2), or give it "
                f"text to continue (`localai generate --model {self.name} --prompt ...`, `localai complete`)")

    def _chat_parts(self, messages: list[dict], add_generation_prompt: bool) -> list[tuple[str, bool]]:
        tok = self.tokenizer
        bos = tok.token_bytes(tok.bos_id).decode("utf-8", "replace") if tok.bos_id is not None else ""
        eos = tok.token_bytes(tok.eos_id).decode("utf-8", "replace") if tok.eos_id is not None else ""
        parts = render_chat_parts(messages, template=self.chat_template, bos_token=bos, eos_token=eos,
                                  add_generation_prompt=add_generation_prompt, arch=self.arch)
        if tok.add_bos and bos and parts and parts[0][1] and parts[0][0].startswith(bos):
            parts[0] = (parts[0][0][len(bos):], True)  # the tokenizer adds BOS itself; don't send two
        return parts

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat's prompt text (for display: `chat_tokens` is what the model is given). A
        final assistant message is continued; see `chat_template.render_parts`."""
        return "".join(t for t, _ in self._chat_parts(messages, add_generation_prompt))

    def chat_tokens(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The chat's prompt ids: the template's markup may hold control tokens, message content
        never does (text such as "<|im_start|>" in a message stays plain text). A final
        assistant message is continued (assistant prefill)."""
        return self.tokenizer.encode_parts(self._chat_parts(messages, add_generation_prompt))

    def fim_prompt(self, prefix: str, suffix: str, extra: list[dict] | None = None) -> list[int] | None:
        """Fill-in-the-middle prompt ids, exactly as llama-server's /infill builds them with its
        default settings and a context of n_ctx (tokenizer/fim.py): extra chunks
        [{"filename", "text"}] as <|repo_name|>/<|file_sep|> context, then prefix, suffix,
        middle. None when the model has no FIM tokens. Raises InvalidRequest for a chunk
        without text."""
        from .tokenizer import fim

        if not fim.has_fim(self.tokenizer):
            return None
        try:
            return fim.infill_prompt(self.tokenizer, prefix, suffix, extra, n_ctx=self.n_ctx)
        except ValueError as e:
            raise InvalidRequest(f"complete: {e}") from None

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
        return session._save_logits(logits[-1], prefill=True)

    def decode_one(self, session: Session, token: int) -> np.ndarray:
        """Evaluate one token after what the session holds; its logits (n_vocab,)."""
        logits = self.model(np.asarray([token]), session.cache, last_only=True)
        session.tokens.append(token)
        return session._save_logits(logits[-1], prefill=False)

    def evaluate(self, ev: Eval) -> np.ndarray | None:
        """Run the forward pass a stream asked for (see `Eval`); the logits to send it."""
        logits = self.model(np.asarray(ev.ids), ev.session.cache, last_only=ev.save != "verify")
        ev.session.tokens.extend(ev.ids)
        if ev.save == "verify":
            return np.array(logits, dtype=np.float32, copy=True)
        return None if ev.save is None else ev.session._save_logits(logits[-1], prefill=ev.save == "prefill")

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
               session: Session | None = None, schema: dict | bool | None = None,
               grammar: str | None = None, logprobs: int | None = None, evals: bool = False,
               prefill_chunk: int = N_BATCH, draft: str = "none", prediction: str | None = None,
               draft_model: "LLM | None" = None) -> Iterator[Chunk]:
        """Generate from a prompt (raw text: control-token text in it is parsed, as llama.cpp's
        raw prompts; or token ids), one token per step. Chunks carry every generated id once
        (the last one may have text "" and the stop string's ids).
        `schema` (a JSON schema; True = any JSON object) or `grammar` (GBNF or Lark) constrains
        the output (localai.grammar); `logprobs=k` adds each token's log-probability and the k
        likeliest alternatives to its chunk (sampling.logprobs_entry). The prompt is evaluated
        in passes of `prefill_chunk` tokens; `evals=True` hands each forward pass to the caller:
        the stream then also yields an `Eval`, and must be sent its logits (`gen.send(...)`)
        before it goes on (the daemon's scheduler interleaves and batches several streams so).
        `draft` turns on speculative decoding (localai/speculative.py): "lookup" drafts from the
        prompt and the `prediction` text, "model" from `draft_model` (same vocabulary), "none"
        (default) not at all; greedy output is unchanged, sampling keeps its distribution."""
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed)
        constraint = None
        if schema is not None or grammar is not None:
            from .grammar import constraint as make_constraint

            constraint = make_constraint(self.tokenizer, schema, grammar)
        drafter = self._drafter(draft, prediction, draft_model) if constraint is None else None
        steps = self._stream(prompt, params, int(max_tokens), list(stop or ()), session,
                             constraint=constraint, logprobs=logprobs, prefill_chunk=max(1, int(prefill_chunk)),
                             drafter=drafter)
        return steps if evals else self._run_evals(steps)

    def _drafter(self, draft: str, prediction: str | None, draft_model):
        """A drafter for `draft` (its source is completed with the prompt in _stream)."""
        from . import speculative

        if draft not in DRAFTS:
            raise InvalidRequest(f"draft must be one of {', '.join(DRAFTS)}, not {draft!r}")
        if draft == "none":
            return None
        if draft == "model":
            if draft_model is None:
                raise InvalidRequest("draft \"model\" needs a draft model: set `draft_model` in the config "
                                     "file or start the daemon with `localai serve --draft-model NAME`")
            if draft_model.n_vocab != self.n_vocab:
                raise InvalidRequest(f"the draft model {draft_model.name} has {draft_model.n_vocab} tokens in its "
                                     f"vocabulary, {self.name} has {self.n_vocab}: use a draft model of its family")
            return speculative.DraftModel(draft_model)
        pred = self.tokenize(prediction, add_bos=False) if prediction else []
        return speculative.PromptLookup(pred)

    def _run_evals(self, steps) -> Iterator[Chunk]:
        """A stream that evaluates its own forward passes."""
        try:
            out = next(steps)
            while True:
                if isinstance(out, Eval):
                    out = steps.send(self.evaluate(out))
                else:
                    yield out
                    out = next(steps)
        except StopIteration:
            return
        finally:
            steps.close()

    def _stream(self, prompt, params: SamplingParams, max_tokens: int, stop: list[str],
                session: Session | None, *, constraint=None, logprobs: int | None = None,
                prefill_chunk: int = N_BATCH, drafter=None) -> Iterator[Chunk | Eval]:
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
        # Reuse the cached prefix. A prompt held whole re-uses the logits saved for its last
        # position; without them the last token is evaluated again to get logits.
        keep = session.common_prefix(ids)
        session.keep(keep)
        if keep == len(ids) and keep in session.saved_logits:
            logits = session.saved_logits[keep]
        else:
            keep = min(keep, len(ids) - 1)
            session.keep(keep)
            rest = ids[keep:]
            for i in range(0, len(rest), prefill_chunk):
                last = i + prefill_chunk >= len(rest)
                logits = yield Eval(session, rest[i:i + prefill_chunk], "prefill" if last else None)
        timings.cache_n, timings.prompt_n = keep, len(ids) - keep
        timings.prompt_ms = (time.perf_counter() - t0) * 1e3

        decoder, matcher = StreamDecoder(self.tokenizer, render_special=False), StopMatcher(stop)
        history = list(ids)
        eog = self.tokenizer.eog_ids
        if drafter is not None and hasattr(drafter, "src"):  # prompt lookup: the prediction, then the prompt
            drafter.src = np.concatenate([drafter.src, np.asarray(ids, dtype=np.int64)])
        verified: list = []   # (draft id, logits after it): evaluated by the last pass, not yet sampled
        proposed = accepted = 0  # drafts of the last verify pass, and how many were taken

        def drop_unverified():
            if verified:  # the drafts after the first disagreement leave the KV cache
                session.keep(len(session.tokens) - len(verified))
                verified.clear()

        t1 = time.perf_counter()
        finish = "length"
        while True:
            if timings.predicted_n >= max_tokens:
                break
            raw = logits
            if constraint is not None:  # disallowed tokens -> -inf
                logits = constraint.mask(logits)
            token = sampler.verify(logits, history, verified[0][0]) if verified else sampler(logits, history)
            if token in eog:
                finish = "eos"
                break
            if constraint is not None:
                constraint.accept(token)
            lp = None if logprobs is None else [logprobs_entry(raw, token, logprobs, self.tokenizer.token_bytes)]
            history.append(token)
            timings.predicted_n += 1
            text, stopped = matcher.push(decoder.push(token))
            if stopped:  # the text before the stop string is still the answer's
                drop_unverified()
                timings.predicted_ms = (time.perf_counter() - t1) * 1e3
                yield Chunk(text, [token], finish_reason="stop", timings=timings, logprobs=lp)
                return
            yield Chunk(text, [token], logprobs=lp)  # text may be "" (held back); one chunk per decode step
            if constraint is not None and constraint.done:  # the grammar is complete: only EOS may follow
                finish = "eos"
                break
            if verified and verified[0][0] == token:  # the last pass evaluated this token already
                logits = verified.pop(0)[1]
                timings.draft_accepted_n += 1
                accepted += 1
                continue
            drop_unverified()
            if timings.predicted_n >= max_tokens or len(session.tokens) >= self.n_ctx:
                break
            drafts = []
            if drafter is not None:
                if proposed:
                    drafter.update(proposed, accepted)
                k = min(drafter.next_k(), max_tokens - timings.predicted_n - 1, self.n_ctx - len(session.tokens) - 1)
                drafts = drafter.propose(history, k) if k > 0 else []
                proposed, accepted = len(drafts), 0
            if drafts:
                timings.draft_n += len(drafts)
                rows = yield Eval(session, [token] + drafts, "verify")
                logits, verified[:] = rows[0], list(zip(drafts, rows[1:]))
            else:
                logits = yield Eval(session, [token], "decode")
        drop_unverified()
        timings.predicted_ms = (time.perf_counter() - t1) * 1e3
        tail, stopped = matcher.push(decoder.flush())
        if stopped:
            finish = "stop"
        else:
            tail += matcher.flush()
        yield Chunk(tail, [], finish_reason=finish, timings=timings)

    def stream_chat(self, messages: list[dict], **kwargs) -> Iterator[Chunk]:
        self.check_can_chat()
        return self.stream(self.chat_tokens(messages), **kwargs)

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
         n_threads: int | None = None, activation_bits: int | str | None = None) -> LLM:
    path = store.resolve(model)
    name = model if not store.looks_like_path(model) else None
    return LLM(path, backend=backend, n_ctx=n_ctx, n_threads=n_threads, name=name, activation_bits=activation_bits)
