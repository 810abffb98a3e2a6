"""The prompt cache: a small LRU pool of engine Sessions (KV caches), bounded by count and
by bytes. A request takes the idle session whose cached tokens share the longest prefix with
its prompt, so it pays only for the tokens after that prefix; the engine does the reuse
(`llm.stream(..., session=s)` keeps the common prefix of `s.tokens` and the prompt).
"""
from __future__ import annotations


def common_prefix(a: list, b: list) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PromptCache:
    def __init__(self, llm, max_sessions: int = 8, max_bytes: int = 1 << 30):
        self.llm = llm
        self.max_sessions = max(1, max_sessions)
        self.max_bytes = max_bytes
        self.idle: list = []   # least recently used first
        self.busy: list = []
        self.hits = 0          # requests that reused a cached prefix
        self.reused_tokens = 0

    def acquire(self, prompt: list, use_cache: bool = True):
        """A session for `prompt`, taken out of the pool until `release`."""
        best, best_n = None, 0
        if use_cache:
            for s in self.idle:
                n = common_prefix(s.tokens, prompt)
                if n > best_n:
                    best, best_n = s, n
        room = len(self.idle) + len(self.busy) < self.max_sessions
        if best is not None and (2 * best_n >= len(best.tokens) or best_n >= len(prompt) - 1 or not room):
            # keeps most of what the session holds (a chat's next turn), covers the whole
            # prompt (a repeated request, however much was generated after it), or the pool
            # is full: reuse it
            self.hits += 1
            self.reused_tokens += best_n
            self.idle.remove(best)
            session = best
        elif room or not self.idle or not use_cache:
            session = self.llm.new_session()  # keep the others' prefixes for later requests
        else:
            session = self.idle.pop(0)  # the least recently used
        self.busy.append(session)
        return session

    def release(self, session, keep: bool = True) -> None:
        """Return a session; `keep=False` (an error left it in doubt) drops it."""
        if session in self.busy:
            self.busy.remove(session)
        if keep:
            self.idle.append(session)
        while self.idle and (len(self.idle) + len(self.busy) > self.max_sessions
                             or self.nbytes > self.max_bytes):
            self.idle.pop(0)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.idle + self.busy)

    def stats(self) -> dict:
        return {"sessions": len(self.idle) + len(self.busy), "busy": len(self.busy),
                "bytes": self.nbytes, "max_sessions": self.max_sessions,
                "max_bytes": self.max_bytes, "hits": self.hits, "reused_tokens": self.reused_tokens}
