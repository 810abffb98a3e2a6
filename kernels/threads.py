"""How many threads the kernels use, chosen online: an A/B test that follows the machine's load.

A thread team waits at the end of every parallel kernel for its slowest member. When another
process keeps one of two cores busy, the scheduler deschedules one of our threads for
milliseconds at a time, and decode, ~200 short matmuls per token, waits that long at each
one: SmolLM2 fell from 142 to 15 tok/s with two threads, while one thread alone kept 87.
No fixed count is right on a laptop, where load comes and goes, so the count is measured:

    t = Tuner(max_threads=2)
    n = t.threads(kind)              # kind: "decode" (few rows of x) or "prefill"
    ... run the kernel with n threads, taking `seconds` for `work` (any unit, e.g. M K N) ...
    t.record(kind, work, seconds)

Work and time are summed over windows of `calls` kernel calls (at least `min_s` seconds);
the window's rate (work per second) is the figure of merit, so every matrix shape of a
forward pass is in each window in about the same mix. Most windows run the current count;
every `explore` windows one window runs a neighbour count (one more or one fewer thread),
and if it beats the window just before it by `margin` the neighbour becomes current. A
trial that has run at least `abort_calls` calls at less than 1 / `abort` of that window's
rate is cut short, so a bad trial costs little: with abort 1.25, a trial of one thread
where two decode a memory-bound 7B model 1.7x faster stops after 8 calls instead of running
its whole window (~4 % of decode speed, measured on a LLaMA-7B-shaped file), and one that
could win (by `margin`) is never that far behind. The first trial follows the first window;
each trial that loses doubles the interval to the next one (up to `explore_max` windows); a switch, or a window that falls below half the recent rate (load
just arrived), brings the next trial forward. Decode and prefill are tuned apart: their
rates are not comparable and their best counts can differ.

`pinned=True` (the `threads` setting) never changes the count. The clock is not read
here: callers pass the seconds, so tests can inject timings.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Arm:
    """The tuning state of one kind of call."""
    current: int
    trial: int | None = None      # the count being tried in this window, if any
    work: float = 0.0             # this window's sums
    seconds: float = 0.0
    calls: int = 0
    last_rate: float = 0.0        # the last finished window of `current`
    recent: list = field(default_factory=list)  # rates of the last few windows of `current`
    since: int = 0                # windows of `current` since the last trial
    interval: int = 0             # windows between trials now
    direction: int = -1           # which neighbour to try next: -1 fewer threads, +1 more
    switches: int = 0
    trials: int = 0


class Tuner:
    """Per-kind thread counts in 1..max_threads, adapted from the rates the caller records.
    Thread-safe: windows close under a lock; two threads adding to a window at once may
    lose a call from its sums, which only blurs a statistic."""

    def __init__(self, max_threads: int, *, pinned: bool = False, calls: int = 128, min_s: float = 0.002,
                 explore: int = 8, explore_max: int = 64, margin: float = 0.05, abort: float = 1.25,
                 abort_calls: int = 8):
        self.max_threads = max(1, int(max_threads))
        self.pinned = pinned or self.max_threads == 1
        self.calls, self.min_s = calls, min_s
        self.explore, self.explore_max = explore, explore_max
        self.margin, self.abort, self.abort_calls = margin, abort, abort_calls
        self._arms: dict[str, _Arm] = {}
        self._lock = threading.Lock()

    def _arm(self, kind: str) -> _Arm:
        with self._lock:
            arm = self._arms.get(kind)
            if arm is not None:
                return arm
            # the first trial comes after the first window: a process often starts under load
            arm = self._arms[kind] = _Arm(current=self.max_threads, interval=self.explore, since=self.explore - 1)
            return arm

    def threads(self, kind: str = "decode") -> int:
        """The count the next call of this kind should use."""
        if self.pinned:
            return self.max_threads
        arm = self._arms.get(kind) or self._arm(kind)
        trial = arm.trial
        return arm.current if trial is None else trial

    def state(self, kind: str = "decode") -> dict:
        """For logs and tests: current count, trial in progress, switches and trials so far."""
        a = self._arm(kind)
        with self._lock:
            return {"current": self.max_threads if self.pinned else a.current, "trial": a.trial,
                    "switches": a.switches, "trials": a.trials, "interval": a.interval}

    def record(self, kind: str, work: float, seconds: float) -> None:
        """One call of `kind` that did `work` in `seconds` with the count threads() gave.
        The sums are updated without the lock (a call every few tens of microseconds in
        decode: ~1 us here); a window is closed under it."""
        if self.pinned:
            return
        a = self._arms.get(kind) or self._arm(kind)
        a.work += work
        a.seconds += seconds
        a.calls += 1
        if a.calls >= self.calls or a.trial is not None and a.calls >= self.abort_calls:
            with self._lock:
                if a.calls >= self.calls and a.seconds >= self.min_s:
                    self._close(a)
                elif a.trial is not None and a.last_rate > 0 and a.calls >= self.abort_calls \
                        and a.work * self.abort < a.last_rate * a.seconds:
                    self._close(a)  # the trial is already far behind: stop paying for it

    def _close(self, a: _Arm) -> None:
        rate = a.work / max(a.seconds, 1e-9)
        a.work = a.seconds = 0.0
        a.calls = 0
        if a.trial is not None:  # the A/B decision, against the window just before the trial
            won = rate > a.last_rate * (1 + self.margin)
            if won:
                a.current, a.switches = a.trial, a.switches + 1
                a.recent, a.last_rate = [rate], rate
                a.interval = self.explore  # keep climbing in that direction soon
            else:
                a.direction = -a.direction
                a.interval = min(self.explore_max, a.interval * 2)
            a.trial, a.since = None, 0
            return
        a.recent = (a.recent + [rate])[-4:]
        a.last_rate = rate
        a.since += 1
        ref = sorted(a.recent)[len(a.recent) // 2]
        if len(a.recent) >= 3 and rate < 0.5 * ref:  # the load changed: look again now
            a.interval = self.explore
            a.since = a.interval
        if a.since >= a.interval:
            a.trial = self._neighbour(a)
            if a.trial is not None:
                a.trials += 1

    def _neighbour(self, a: _Arm) -> int | None:
        for d in (a.direction, -a.direction):
            n = a.current + d
            if 1 <= n <= self.max_threads:
                a.direction = d
                return n
        return None
