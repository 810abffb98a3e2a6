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
                 "repeat_last_n", "seed", "stop")
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


def _drop_steps(messages: list) -> tuple[list, list]:
    """The removable messages' indices, and how many of them each truncation step has
    dropped in all (cumulative counts): a step
    drops the oldest non-system message (never the last) and the assistant replies right
    after it (a conversation should not start with the assistant's half of a dropped turn)."""
    n = len(messages)
    removable = [i for i in range(n - 1) if messages[i]["role"] != "system"]
    steps, p = [], 0
    while p < len(removable):
        p += 1
        while p < len(removable) and removable[p] == removable[p - 1] + 1 \
                and messages[removable[p]]["role"] == "assistant":
            p += 1
        steps.append(p)
    return removable, steps


def _truncate(llm, messages: list, room: int) -> tuple[list, list, int]:
    """Drop the oldest non-system messages (never the last) until the prompt leaves `room`.

    Linear in the conversation's length: each message's tokens are counted once to estimate
    how many steps to drop, and the template is rendered only to confirm the estimate (a few
    times, a binary search at worst), not once per dropped message."""
    ids = _chat_ids(llm, messages)
    limit = llm.n_ctx - room
    if len(ids) <= limit:
        return list(messages), ids, 0
    removable, steps = _drop_steps(messages)
    if not steps:
        return list(messages), ids, 0
    content = [len(llm.tokenize(m["content"])) for m in messages]
    overhead = max(0.0, (len(ids) - sum(content)) / len(messages))  # role markers per message
    cum = [0.0]                                                     # tokens freed by removable[:j]
    for i in removable:
        cum.append(cum[-1] + content[i] + overhead)

    def state(k: int) -> tuple[list, list]:
        gone = set(removable[:steps[k - 1]]) if k else set()
        kept = [m for i, m in enumerate(messages) if i not in gone]
        return kept, _chat_ids(llm, kept)

    def estimate(k: int, excess: int) -> int:
        """The fewest steps after k whose messages free `excess` tokens by the estimate."""
        base = cum[steps[k - 1]] if k else 0.0
        for j in range(k + 1, len(steps) + 1):
            if cum[steps[j - 1]] - base >= excess:
                return j
        return len(steps)

    lo, hi, best = 0, None, None    # lo steps do not fit; hi steps fit (best = its state)
    k = estimate(0, len(ids) - limit)
    while hi is None:                # gallop up from the estimate
        kept, kids = state(k)
        if len(kids) <= limit:
            hi, best = k, (kept, kids)
        elif k == len(steps):
            return kept, kids, len(messages) - len(kept)  # cannot fit: check_fits says so
        else:
            lo, k = k, estimate(k, len(kids) - limit)
    for probe in (True, False):     # the fewest steps that fit: hi - 1 first (the estimate
        while hi - lo > 1:           # is usually right), then a binary search
            mid = hi - 1 if probe else (lo + hi) // 2
            kept, kids = state(mid)
            if len(kids) <= limit:
                hi, best = mid, (kept, kids)
            else:
                lo = mid
            if probe:
                break
    kept, kids = best
    return kept, kids, len(messages) - len(kept)


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
