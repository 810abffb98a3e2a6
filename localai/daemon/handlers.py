"""What each generating method asks of the engine: its prompt tokens, its sampling
arguments and an optional filter over the output text.

Shared by the daemon's scheduler and the in-process client (`--no-daemon`), so both give the
same answer for the same request.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ContextOverflow
from ..protocol import (ActionParams, ChatParams, CompleteParams, GenerateParams, RewriteParams, Sampling,
                        TokenizeParams)

# Sampling fields that are llm.stream(...) keyword arguments (the rest are the daemon's).
ENGINE_KWARGS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                 "repeat_last_n", "seed", "stop", "schema", "grammar", "logprobs")
COMPLETE_DEFAULTS = {"temperature": 0.0, "max_tokens": 128}
AUTO_LOOKUP = ("rewrite", "complete")  # draft "auto": methods whose output copies text of the request

REWRITE_SYSTEM = (
    "You rewrite text as instructed. Reply with the rewritten text only: no explanation, "
    "no introduction, no quotes."
)


def rewrite_messages(text: str, instruction: str, language: str | None) -> list:
    """The chat of a `rewrite`. Code (a `language` given): the selection fenced first, the
    instruction last; small models then copy what they should keep (SmolLM2-135M, asked to
    rename one parameter of a 60-line function, writes a different function when the
    instruction comes first and copies the function when it comes last), which is also what
    lets prompt-lookup drafts (localai/speculative.py) be accepted. Prose: the instruction
    first, as before (SmolLM2 answers "Here's the corrected text: ...", which RewriteFilter
    drops)."""
    fence = f"```{language or ''}"
    text = text.replace("\r\n", "\n")  # the model writes LF; RewriteFilter puts CRLF back
    block, instruction = f"{fence}\n{text}\n```", instruction.strip()
    user = f"{block}\n\n{instruction}" if language else f"{instruction}\n\n{block}"
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]


@dataclass
class Prepared:
    prompt: list          # token ids
    kwargs: dict          # for llm.stream(...)
    filter: object = None  # .feed(text) -> text, .finish() -> text
    dropped: int = 0      # chat messages dropped to fit the context
    done: dict = field(default_factory=dict)  # extra fields of the `done` event (Done(**done))


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
    llm.check_can_chat()
    return llm.chat_tokens(messages)  # content stays plain text: only the template's markup is parsed


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
        kwargs = sampling_kwargs(params, COMPLETE_DEFAULTS)
        ids, done = complete_prompt(llm, params, kwargs.get("max_tokens", COMPLETE_DEFAULTS["max_tokens"]))
        out = Prepared(ids, kwargs, SuffixGuard(params.prefix, params.suffix), done=done)
    elif isinstance(params, RewriteParams):
        messages = rewrite_messages(params.text, params.instruction, params.language)
        out = Prepared(_chat_ids(llm, messages), sampling_kwargs(params, defaults),
                       RewriteFilter(params.text, params.instruction))
    elif isinstance(params, ActionParams):
        from ..actions.registry import ActionFilter

        run = params.bound  # the action's prompt, built by the daemon's connection (bind_action)
        done: dict = {}
        out = Prepared(_chat_ids(llm, run.messages), sampling_kwargs(params, {**defaults, **run.sampling}),
                       ActionFilter(run, done), done=done)
    else:
        raise TypeError(f"{method} does not generate")
    check_fits(llm, len(out.prompt))
    out.kwargs.update(draft_kwargs(method, params))
    return out


def draft_kwargs(method: str, params) -> dict:
    """llm.stream's speculative decoding arguments for the request's `draft` and `prediction`."""
    draft = params.draft or "auto"
    if draft == "auto":
        draft = "lookup" if params.prediction or method in AUTO_LOOKUP else "none"
    if draft == "none":
        return {}
    return {"draft": draft, "prediction": params.prediction}


# --- complete: fit the context, never repeat the suffix ---------------------------------------

def _fim_prompt(llm, prefix: str, suffix: str, extra: list) -> list | None:
    """llm.fim_prompt with the extra context chunks (None: the model has no FIM tokens)."""
    return llm.fim_prompt(prefix, suffix, extra=extra or None)


def _keep_tail(llm, text: str, ids: list, n: int) -> str:
    """The end of `text` that tokenizes to at most `n` tokens (`ids` = its tokens), starting at
    a line start when the kept part holds a line break."""
    if n <= 0:
        return ""
    kept = text[max(0, len(text) - len(llm.detokenize(ids[len(ids) - n:]))):]
    while kept and len(llm.tokenize(kept, add_bos=False)) > n:  # a token split at the cut
        kept = kept[max(1, len(kept) // 64):]
    nl = kept.find("\n")
    return kept[nl + 1:] if 0 <= nl < len(kept) // 2 else kept


def _keep_head(llm, text: str, ids: list, n: int) -> str:
    """The start of `text` that tokenizes to at most `n` tokens, ending at a line end when it
    holds a line break."""
    if n <= 0:
        return ""
    kept = text[:len(llm.detokenize(ids[:n]))]
    while kept and len(llm.tokenize(kept, add_bos=False)) > n:
        kept = kept[:len(kept) - max(1, len(kept) // 64)]
    nl = kept.rfind("\n")
    return kept[:nl + 1] if nl >= len(kept) // 2 else kept


def complete_prompt(llm, params: CompleteParams, max_tokens: int) -> tuple[list, dict]:
    """The prompt ids of a `complete` request and the `done` fields saying what was left out.

    Prompt + max_tokens must fit n_ctx (max_tokens counts for at most half of it): when they
    do not, the oldest extra chunks go first (while they take more than half the room), then
    the far ends of the text, in tokens: the tail of the prefix and the head of the suffix are
    kept, 3:1 as llama-server's /infill splits them, either side's unused share going to the
    other. Without FIM tokens the model sees the prefix alone."""
    prefix, suffix, extra = params.prefix, params.suffix, list(params.extra or [])
    room = llm.n_ctx - min(max_tokens, llm.n_ctx // 2)
    fim = _fim_prompt(llm, "", "", extra) is not None
    if not fim:
        suffix, extra = "", []
    done = {}
    if fim and extra:
        n_extra = len(extra)
        while extra and len(_fim_prompt(llm, "", "", extra)) > room // 2:
            extra.pop(0)
        if len(extra) < n_extra:
            done["dropped_extra"] = n_extra - len(extra)
    fixed = len(_fim_prompt(llm, "", "", extra)) if fim else len(llm.tokenize(""))
    budget = max(0, room - fixed)
    if len(prefix.encode()) + len(suffix.encode()) > budget:  # a token holds at least one byte
        p_ids = llm.tokenize(prefix, add_bos=False)
        s_ids = llm.tokenize(suffix, add_bos=False) if suffix else []
        if len(p_ids) + len(s_ids) > budget:
            n_s = min(len(s_ids), max(budget // 4, budget - len(p_ids)))
            n_p = min(len(p_ids), budget - n_s)
            prefix = _keep_tail(llm, prefix, p_ids, n_p)
            done["dropped_prefix_tokens"] = len(p_ids) - len(llm.tokenize(prefix, add_bos=False))
            if fim:
                suffix = _keep_head(llm, suffix, s_ids, n_s)
                done["dropped_suffix_tokens"] = len(s_ids) - len(llm.tokenize(suffix, add_bos=False))
    ids = _fim_prompt(llm, prefix, suffix, extra) if fim else llm.tokenize(prefix)
    if not ids:  # nothing before the cursor and no FIM tokens (llama.vim's warm-up): start from BOS
        tok = llm.tokenizer
        ids = [tok.bos_id if tok.bos_id is not None else tok.eos_id]
    return list(ids), done


def _substantial(line: str) -> bool:
    return len("".join(line.split())) >= 6


def _must_match(target: str) -> int:
    """How much of `target` a repeat must cover to count: through the end of its first line
    with six or more non-blank characters (a lone `}` or `end` is little evidence), at most
    three lines."""
    pos = 0
    for _ in range(3):
        if pos >= len(target):
            break
        nl = target.find("\n", pos)
        end = len(target) if nl < 0 else nl + 1
        if _substantial(target[pos:end]):
            return end
        pos = end
    return pos


class SuffixGuard:
    """Streams a completion through, cut where it starts to repeat the text after the cursor
    (what llama.vim drops on the editor side, done here so every client gets it): the whole
    suggestion when it begins with the suffix, or from a line that begins the suffix's next
    non-blank lines. A repeat counts once it covers the suffix through its first substantial
    line (`done` then: generating more is waste); text that may still turn out to be one is
    held back, and at the end of the stream a held-back start of the suffix is dropped."""

    def __init__(self, prefix: str, suffix: str):
        self.text = ""      # everything fed so far
        self.sent = 0       # how much of it was let through
        self.cut = None     # where the repeat begins, once found
        cur_pre = prefix[prefix.rfind("\n") + 1:]
        # What a generated line is compared with: the lines after the cursor's line, or, when
        # only blanks precede the cursor, its line as a whole; blank lines before it skipped.
        below = cur_pre + suffix if not cur_pre.strip() else suffix.partition("\n")[2]
        while below and not below.split("\n", 1)[0].strip():
            below = below.split("\n", 1)[1] if "\n" in below else ""
        self.below = (below, _must_match(below)) if below.strip() else None
        # the candidates that may still be a repeat: (lead, start, target, need), where
        # lead + text[start:] is compared with target[:need]; ones that departed are gone
        self.open = []
        if suffix.strip():
            self.open.append(("", 0, suffix, _must_match(suffix)))
        if self.below is not None and not cur_pre.strip():  # the first line, with the blanks before it
            self.open.append((cur_pre, 0, *self.below))

    def _seen(self, lead: str, start: int) -> str:
        return lead + self.text[start:]

    def feed(self, text: str) -> str:
        if self.cut is not None:
            return ""
        base = len(self.text)
        self.text += text
        if self.below is not None:  # every new line may start a repeat
            self.open += [("", base + i + 1, *self.below) for i, c in enumerate(text) if c == "\n"]
        still = []
        for lead, start, target, need in self.open:
            seen = self._seen(lead, start)
            if len(seen) >= need:
                if seen[:need] == target[:need]:
                    self.cut = max(self.sent, len(self.text[:start].rstrip()))
                    self.open = []
                    out, self.sent = self.text[self.sent:self.cut], self.cut
                    return out
            elif target.startswith(seen):
                still.append((lead, start, target, need))
        self.open = still
        safe = min([start for _, start, _, _ in self.open] + [len(self.text)])
        if self.below is not None:  # the next line may start one: hold back trailing blanks
            safe = len(self.text[:safe].rstrip())
        safe = max(self.sent, safe)
        out, self.sent = self.text[self.sent:safe], safe
        return out

    @property
    def done(self) -> bool:
        return self.cut is not None

    def finish(self) -> str:
        """The end of the stream: a held-back start of the suffix is dropped, the rest let through."""
        if self.cut is not None:
            return ""
        end = len(self.text)
        for lead, start, _, _ in self.open:  # all still starts of their target
            if self._seen(lead, start).strip():
                end = min(end, len(self.text[:start].rstrip()))
        end = max(end, self.sent)
        out, self.sent, self.text, self.open = self.text[self.sent:end], end, self.text[:end], []
        return out


def tokenize(llm, params: TokenizeParams) -> dict:
    ids = llm.tokenize(params.text, special=params.special, add_bos=params.add_bos)
    return {"tokens": ids, "n_tokens": len(ids)}


# A model's line before the replacement: "Here's the rewritten text:", "Sure! ...", "Revised version:".
_PREAMBLE = re.compile(
    r"^\W*(?:sure|certainly|of course|okay|absolutely)\s*[!,.:]"
    r"|^\W*here(?:'s|\u2019s| is| are)\b.*(?:rewrit|revis|correct|improv|updat|edit|fix|version|text|code)"
    r"|^\W*(?:the |a |my |your )?(?:rewritten|revised|corrected|improved|updated|edited|fixed|new|final)"
    r"\b[^\n]{0,60}:\s*$", re.I)


# A paragraph after the replacement, in an answer that began with a preamble: "This change ...".
_POSTAMBLE = re.compile(
    r"\W*(?:(?:this|these|the|my) (?:change|changes|revision|revisions|rewrite|rewritten|revised|corrected|"
    r"version|edit|edits|correction|corrections)\b|i(?:'ve| have)? (?:changed|corrected|fixed|rephrased|"
    r"rewritten|rewrote|revised|made|added|removed|replaced|kept)\b|note\b|explanation\b|in this (?:version|rewrite)\b)",
    re.I)


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class FenceStripper:
    """Streams a rewrite's text through, keeping only the replacement: drops leading blank
    lines, a known preamble line ("Here's the rewritten text:", or the instruction echoed) or
    an intro line ending in ':' right before a fence, the opening ```lang line, and everything
    from the next fence line on; trailing blank lines go too. A preamble is not dropped when
    the original text itself starts like one. Holds back only what may still turn out to be
    one of those (the first line, a line that starts like a fence, newlines before it)."""

    def __init__(self, original: str = "", instruction: str = ""):
        self.buf = ""
        self.state = "start"      # start -> [intro] -> body -> done
        self.intro = ""           # (intro) a first line ending in ':'
        self.known = False        # (intro) ... that is a known preamble: dropped whatever follows
        self.nl = 0               # (body) newlines held back
        self.line_start = True    # (body) the next character begins a line
        first = next((line for line in original.splitlines() if line.strip()), "")
        self.original_like = bool(_PREAMBLE.search(first))
        self.first_word = (_words(first).split() or [""])[0]
        self.instruction = _words(instruction)

    @staticmethod
    def _fence(line: str) -> bool:
        return line.lstrip(" \t").startswith("```")

    def _preamble(self, line: str) -> str | None:
        """None when `line` is no preamble; else the text after it on the same line ('' if none)."""
        if self.original_like or (self.first_word and _words(line).split()[:1] == [self.first_word]):
            return None  # the original starts so too: a rewrite, not a preamble
        head, colon, rest = line.partition(":")
        words = _words(head)
        if self.instruction and words and (words == self.instruction or colon and words.startswith(self.instruction)):
            return rest.strip() if colon else ""
        if colon and rest.strip() and _PREAMBLE.search(head + ":"):  # "Here it is: The quick fox"
            return rest.strip()
        return "" if _PREAMBLE.search(line) else None

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
                    continue
                if self.state == "start":
                    after = self._preamble(line)
                    if after == "":
                        self.state, self.intro, self.known = "intro", line, True
                        continue
                    if after is not None:
                        line = after
                    elif line.rstrip().endswith(":"):
                        self.state, self.intro = "intro", line
                        continue
                out.append(self.intro + "\n" if self.intro and not self.known else "")
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
            elif self.known and self.nl >= 2 and _POSTAMBLE.match(line):
                self.state, self.buf = "done", ""  # a chatty answer's explanation after the text
            elif self.known and self.nl >= 2 and nl < 0 and len(line) < 40:
                break  # may still turn out to be one
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
            if self._fence(rest):
                return ""
            after = self._preamble(rest)
            return after if after else rest.strip()  # a line alone is the answer
        if self.state == "intro":
            if self._fence(rest) or not rest.strip():  # a preamble alone is the answer, unless it ends in ':'
                return "" if self.known and self.intro.rstrip().endswith(":") else self.intro
            return (rest if self.known else self.intro + "\n" + rest).strip("\n")
        if self.state == "done" or not rest.strip() or (self.line_start and self._fence(rest)) or \
                (self.line_start and self.known and self.nl >= 2 and _POSTAMBLE.match(rest)):
            return ""
        return ("\n" * self.nl if self.line_start else "") + rest


class RewriteFilter:
    """FenceStripper, then the original's line endings: CRLF when the original text uses them,
    and its trailing line break (the replacement ends with one exactly when the original does)."""

    def __init__(self, original: str, instruction: str = ""):
        self.fence = FenceStripper(original, instruction)
        self.eol = "\r\n" if original.count("\r\n") * 2 > original.count("\n") else "\n"
        self.trailing = original.endswith("\n")
        self.any = False

    def _out(self, text: str) -> str:
        self.any = self.any or bool(text)
        return text.replace("\n", self.eol) if self.eol != "\n" else text

    def feed(self, text: str) -> str:
        return self._out(self.fence.feed(text))

    @property
    def done(self) -> bool:
        return self.fence.done

    def finish(self) -> str:
        tail = self._out(self.fence.finish().rstrip("\n"))
        return tail + (self.eol if self.trailing and self.any else "")
