"""Prompt-lookup drafting replayed against a recorded greedy answer: how many forward passes
and rows a speculative rewrite needs, without running the model again.

Greedy speculative decoding gives exactly the plain greedy tokens, so once an answer is
recorded, which drafts a verify pass would accept is known: this replays the engine's loop
(engine.LLM._stream: one pass per sampled token that was not already verified, k from the
drafter's Adaptive rule) with speculative.PromptLookup or a variant, and prints the passes,
the rows (each pass's token plus its drafts) and the passes in the answer's last part.

    python benchmarks/lookup_sim.py                 # SmolLM2, batching.py's rewrite, 1,500 tokens
    python benchmarks/lookup_sim.py --model gemma3-270m --base

With the time of a pass a and of a row b fitted from the two rewrite runs (plain: 1,500
passes of one row), a verify-heavy run costs passes * a + rows * b: what a drafter change can
buy before it is measured for real (benchmarks/batching.py rewrite).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def record(model: str, base: bool, tokens: int) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy answer ids) of batching.py's rewrite task, cached in the temp dir."""
    path = Path(tempfile.gettempdir()) / f"localai-lookup-sim-{model}-{int(base)}-{tokens}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    import localai
    from batching import FUNC
    from localai.daemon import handlers

    llm = localai.load(model, backend="numpy", n_ctx=4096)
    instruction = "Rename the parameter discount_rate to rebate. Change nothing else."
    if base:
        ids = llm.tokenize(f"```python\n{FUNC}\n```\n\n{instruction}\n\n```python\n", special=True)
    else:
        ids = handlers._chat_ids(llm, handlers.rewrite_messages(FUNC, instruction, "python"))
    out = [t for ch in llm.stream(list(ids), max_tokens=tokens, temperature=0) for t in ch.tokens]
    path.write_bytes(pickle.dumps((list(ids), out)))
    return list(ids), out


def replay(drafter, prompt: list[int], out: list[int], tail_from: int) -> tuple[int, int, int]:
    """(passes, rows, passes after answer token tail_from) of a greedy speculative run."""
    history, i = list(prompt), 0
    passes = rows = tail = proposed = accepted = 0
    while i < len(out):
        history.append(out[i])
        i += 1
        if proposed:
            drafter.update(proposed, accepted)
        k = min(drafter.next_k(), len(out) - i)
        drafts = drafter.propose(history, k) if k > 0 else []
        passes, rows, tail = passes + 1, rows + 1 + len(drafts), tail + (i > tail_from)
        proposed, accepted = len(drafts), 0
        for t in drafts:
            if i >= len(out) or out[i] != t:
                break
            history.append(t)
            i, accepted = i + 1, accepted + 1
    return passes, rows, tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--base", action="store_true", help="the task as text to continue (a base model)")
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument("--tail-from", type=int, default=1290, help="answer tokens after which passes count as the tail")
    a = ap.parse_args()
    from localai import speculative

    prompt, out = record(a.model, a.base, a.tokens)
    passes, rows, tail = replay(speculative.PromptLookup(prompt), prompt, out, a.tail_from)
    print(f"{a.model}: prompt {len(prompt)} tokens, answer {len(out)}; prompt lookup: {passes} passes, "
          f"{rows} rows, {tail} passes after token {a.tail_from} (plain decoding: {len(out)} passes of one row)")


if __name__ == "__main__":
    main()
