"""What each generating method asks of the engine: its prompt tokens, its sampling
arguments and an optional filter over the output text.

Shared by the daemon's scheduler and the in-process client (`--no-daemon`), so both give the
same answer for the same request.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ContextOverflow
from ..protocol import (ChatParams, CompleteParams, GenerateParams, RewriteParams, Sampling,
                        TokenizeParams)

# Sampling fields that are llm.stream(...) keyword arguments (the rest are the daemon's).
ENGINE_KWARGS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                 "repeat_last_n", "seed", "stop", "schema", "grammar", "logprobs")
COMPLETE_DEFAULTS = {"temperature": 0.0, "max_tokens": 128}

REWRITE_SYSTEM = (
    "You rewrite text as instructed. Reply with the rewritten text only: no explanation, "
    "no introduction, no quotes."
)


@dataclass
class Prepared:
    prompt: list          # token ids
    kwargs: dict          # for llm.stream(...)
    filter: object = None  # .feed(text) -> text, .finish() -> text
    dropped: int = 0      # chat messages dropped to fit the context


def sampling_kwargs(params: Sampling, defaults: dict) -> dict:
    """Request values, else the defaults (config file), else the engine's own defaults."""
    out = {k: v for k, v in defaults.items() if k in ENGINE_KWARGS}
    for k in ENGINE_KWARGS:
        v = getattr(params, k)
        if v is not None:
            out[k] = tuple(v) if k == "stop" else v
    return out


def check_fits(llm, n_prompt: int) -> None:
    if n_prompt >= llm.n_ctx:  # as the engine: at least one position left to generate into
        raise ContextOverflow(
            f"the prompt is {n_prompt} tokens but the context holds {llm.n_ctx}: shorten it, or give "
            f"the daemon a larger context (`n_ctx` in the config file, `localai serve --n-ctx N`)")


def _chat_ids(llm, messages: list) -> list:
    return llm.tokenize(llm.apply_chat_template(messages), special=True)


def _truncate(llm, messages: list, room: int) -> tuple[list, list, int]:
    """Drop the oldest non-system messages (never the last) until the prompt leaves `room`."""
    messages = list(messages)
    dropped = 0
    ids = _chat_ids(llm, messages)
    while len(ids) + room > llm.n_ctx:
        idx = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if idx is None:
            break
        del messages[idx]
        dropped += 1
        # a conversation should not start with the assistant's half of a dropped turn
        while idx < len(messages) - 1 and messages[idx]["role"] == "assistant":
            del messages[idx]
            dropped += 1
        ids = _chat_ids(llm, messages)
    return messages, ids, dropped


def prepare(llm, method: str, params, defaults: dict) -> Prepared:
    """Turn a request's params into prompt ids and llm.stream(...) arguments."""
    if isinstance(params, GenerateParams):
        ids = llm.tokenize(params.prompt, special=True)
        out = Prepared(ids, sampling_kwargs(params, defaults))
    elif isinstance(params, ChatParams):
        kwargs = sampling_kwargs(params, defaults)
        if params.truncate:
            room = min(kwargs.get("max_tokens", 256), llm.n_ctx // 2)
            _, ids, dropped = _truncate(llm, params.messages, room)
        else:
            ids, dropped = _chat_ids(llm, params.messages), 0
        out = Prepared(ids, kwargs, dropped=dropped)
    elif isinstance(params, CompleteParams):
        ids = llm.fim_prompt(params.prefix, params.suffix)
        if ids is None:  # no FIM tokens: the model continues the prefix
            ids = llm.tokenize(params.prefix)
        if params.extra:
            ids = _with_extra(llm, list(ids), params.extra)
        out = Prepared(list(ids), sampling_kwargs(params, COMPLETE_DEFAULTS))
    elif isinstance(params, RewriteParams):
        fence = f"```{params.language or ''}"
        user = f"{params.instruction.strip()}\n\n{fence}\n{params.text}\n```"
        messages = [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]
        out = Prepared(_chat_ids(llm, messages), sampling_kwargs(params, defaults), FenceStripper())
    else:
        raise TypeError(f"{method} does not generate")
    check_fits(llm, len(out.prompt))
    return out


# llama-server's separator before each extra chunk when the model has no <|file_sep|> token
_SNIPPET = "\n\n--- snippet ---\n\n"


def _with_extra(llm, ids: list, extra: list) -> list:
    """Extra context chunks before the FIM prompt, as llama-server's format_prompt_infill:
    <|repo_name|>myproject\n, then per chunk <|file_sep|>filename\n text (or a snippet
    separator without those tokens), then <|file_sep|>filename\n; after BOS."""
    fim, tok = llm.tokenizer.fim, llm.tokenizer
    out = [fim["rep"], *llm.tokenize("myproject\n", add_bos=False)] if "rep" in fim else []
    for c in extra:
        if "sep" in fim:
            out += [fim["sep"], *llm.tokenize(c.get("filename", "tmp") + "\n", add_bos=False)]
        else:
            out += llm.tokenize(_SNIPPET, add_bos=False)
        out += llm.tokenize(c["text"], add_bos=False)
    if "sep" in fim:
        out += [fim["sep"], *llm.tokenize("filename\n", add_bos=False)]
    n_bos = 1 if ids and tok.add_bos and ids[0] == tok.bos_id else 0
    return ids[:n_bos] + out + ids[n_bos:]


def tokenize(llm, params: TokenizeParams) -> dict:
    ids = llm.tokenize(params.text, special=params.special, add_bos=params.add_bos)
    return {"tokens": ids, "n_tokens": len(ids)}


class FenceStripper:
    """Streams a rewrite's text through, keeping only the replacement: drops leading blank
    lines, an intro line ending in ':' right before a fence, the opening ```lang line, and
    everything from the next fence line on; trailing blank lines go too. Holds back only what
    may still turn out to be one of those (the first line, a line that starts like a fence,
    newlines before it)."""

    def __init__(self):
        self.buf = ""
        self.state = "start"      # start -> [intro] -> body -> done
        self.intro = ""           # (intro) a first line ending in ':'
        self.nl = 0               # (body) newlines held back
        self.line_start = True    # (body) the next character begins a line

    @staticmethod
    def _fence(line: str) -> bool:
        return line.lstrip(" \t").startswith("```")

    def feed(self, text: str) -> str:
        self.buf += text
        out = []
        while self.buf and self.state != "done":
            if self.state in ("start", "intro"):
                nl = self.buf.find("\n")
                if nl < 0:
                    break  # decide on whole lines only
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                if not line.strip():
                    continue
                if self._fence(line):
                    self.state = "body"  # drop the fence line (and an intro before it)
                elif self.state == "start" and line.rstrip().endswith(":"):
                    self.state, self.intro = "intro", line
                else:
                    out.append(self.intro + "\n" if self.intro else "")
                    out.append(line)
                    self.state, self.nl = "body", 1
                continue
            if not self.line_start:  # in a line already known to be text
                nl = self.buf.find("\n")
                if nl < 0:
                    out.append(self.buf)
                    self.buf = ""
                    break
                out.append(self.buf[:nl])
                self.buf, self.nl, self.line_start = self.buf[nl + 1:], 1, True
                continue
            nl = self.buf.find("\n")
            line = self.buf if nl < 0 else self.buf[:nl]
            if self._fence(line):
                self.state, self.buf = "done", ""
            elif nl >= 0 and not line.strip():
                self.buf, self.nl = self.buf[nl + 1:], self.nl + 1  # a blank line: hold it
            elif nl < 0 and (not line.strip() or "```".startswith(line.lstrip(" \t"))):
                break  # may still become a fence
            else:
                out.append("\n" * self.nl)
                self.nl, self.line_start = 0, False
        return "".join(out)

    @property
    def done(self) -> bool:
        """The replacement is complete (its closing fence arrived): generating more is waste."""
        return self.state == "done"

    def finish(self) -> str:
        rest, self.buf = self.buf, ""
        if self.state == "start":
            return "" if self._fence(rest) else rest.strip()
        if self.state == "intro":
            return self.intro + ("" if self._fence(rest) or not rest.strip() else "\n" + rest)
        if self.state == "done" or not rest.strip() or (self.line_start and self._fence(rest)):
            return ""
        return ("\n" * self.nl if self.line_start else "") + rest
