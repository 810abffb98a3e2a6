"""Stop strings over a stream of text.

    matcher = StopMatcher(["\\n\\n", "###"])
    for piece in pieces:
        text, stopped = matcher.push(piece)
        emit(text)
        if stopped:
            break
    else:
        emit(matcher.flush())

A stop string is never emitted. The tail of the text that could still grow into a stop
string is held back until the next piece settles it, so what is emitted never depends on
how the text was split into pieces: it is the full text cut where the first stop string
to complete begins (of two that complete at the same character, the longer, which starts
earlier). This is how a streaming server can stop at once, without waiting to see whether
a longer stop string that began earlier will also complete.
"""
from __future__ import annotations


class StopMatcher:
    """Feed text with `push`; call `flush` at the end of a stream that did not stop.

    After a stop, `matched` is the stop string that ended the stream and `push` returns
    ("", True).
    """

    def __init__(self, stops: list[str]):
        self.stops = sorted({s for s in stops if s}, key=len, reverse=True)
        self.pending = ""      # text not emitted yet: a suffix that may begin a stop string
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def push(self, text: str) -> tuple[str, bool]:
        """Add `text`; return (text safe to emit now, whether a stop string was hit)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        pending = self.pending + text
        hit = self._first_complete(pending)
        if hit is not None:
            start, self.matched = hit
            self.pending = ""
            return pending[:start], True
        held = self._partial_suffix(pending)
        self.pending = pending[len(pending) - held:]
        return pending[:len(pending) - held], False

    def flush(self) -> str:
        """The end of the stream: release the held-back text (nothing after a stop)."""
        out, self.pending = self.pending, ""
        return "" if self.stopped else out

    def _first_complete(self, text: str) -> tuple[int, str] | None:
        # The occurrence that ends first; on a tie the longer stop (it starts earlier).
        best = None
        for stop in self.stops:
            i = text.find(stop)
            if i >= 0 and (best is None or i + len(stop) < best[0] + len(best[1])):
                best = (i, stop)
        return best

    def _partial_suffix(self, text: str) -> int:
        # Length of the longest suffix of `text` that is a proper prefix of some stop.
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
