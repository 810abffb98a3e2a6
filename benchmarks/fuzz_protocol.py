"""Protocol fuzzing for minutes: hypothesis-generated request lines (wrong types, huge numbers,
deep nesting, unicode edge cases, truncated lines, interleaved ids, cancels of unknown ids,
random bytes) sent to a real daemon; after every input the daemon must still give the same
greedy answer to a good request, and at the end it must hold no leaked thread or request.

    python benchmarks/fuzz_protocol.py --minutes 5 [--model PATH]   # default: the tiny test model

Prints the number of inputs and lines tried, and the daemon's threads/fds before and after.
The strategies are the suite's (tests/test_reliability.py), which runs a short version.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402

import test_reliability as T  # noqa: E402
from tiny import write_tiny  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--model", help="a .gguf to serve (default: a tiny random model)")
    ap.add_argument("--batch", type=int, default=200, help="hypothesis examples per batch")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="localai-fuzz-")
    model = a.model or str(write_tiny(os.path.join(root, "tiny.gguf"), n_ctx=256))
    d = T.start_daemon(root, model)
    counts = {"inputs": 0, "lines": 0, "events": 0}
    try:
        want = T.good_answer(d["path"])
        before = T.status(d["path"])
        end = time.monotonic() + a.minutes * 60

        @settings(max_examples=a.batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(T.connection_input())
        def one(inp):
            if time.monotonic() > end:
                return
            lines, leave = inp
            counts["events"] += len(T.send_input(d["path"], lines, leave))
            counts["inputs"] += 1
            counts["lines"] += len(lines)
            assert d["proc"].poll() is None, "the daemon died"
            got = T.good_answer(d["path"])
            assert got == want, f"good request answered {got!r}, not {want!r}"

        while time.monotonic() < end:
            one()
        time.sleep(0.5)
        after = T.status(d["path"])
        assert after["scheduler_alive"] and after["active"] == 0 and after["queued"] == 0, after
        print(f"protocol fuzz: {counts['inputs']} inputs ({counts['lines']} lines, {counts['events']} events) "
              f"in {a.minutes:g} min; daemon alive, good answer unchanged after every input; "
              f"threads {before['threads']} -> {after['threads']}, fds {before['fds']} -> {after['fds']}, "
              f"rss {before['rss_bytes'] >> 20} -> {after['rss_bytes'] >> 20} MiB, "
              f"errors answered {after['errors']}")
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
