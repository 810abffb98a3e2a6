"""Free-running greedy agreement with llama.cpp on the reference prompts.

For each greedy prompt in tests/data/<model>.greedy.json, generate greedily from the same
prompt ids and count the tokens that equal llama.cpp's before the first divergence.
(An exact float engine cannot match llama.cpp token for token everywhere: llama.cpp rounds
activations to 8 bits and K/V to f16, so near-ties flip; see tests/data/README.md.)

    python benchmarks/agreement.py [smollm2|gemma3 ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import localai

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
MODELS = {"smollm2": "smollm2", "gemma3": "gemma3-270m"}


def agreement(key: str) -> list[tuple[str, int, int]]:
    llm = localai.load(MODELS[key])
    ref = json.loads((DATA / f"{key}.greedy.json").read_text())
    rows = []
    for item in ref["items"]:
        want = item["generated_ids"]
        got = llm.generate(item["prompt_ids"], max_tokens=len(want) + 1, temperature=0).tokens
        same = 0
        for a, b in zip(got, want):
            if a != b:
                break
            same += 1
        if same == len(want) and len(got) == len(want):
            same = len(want)  # both stopped at the same EOG
        rows.append((item["id"], same, len(want)))
    return rows


def main(argv: list[str]) -> None:
    for key in argv or list(MODELS):
        rows = agreement(key)
        full = sum(1 for _, s, n in rows if s == n)
        print(f"{key}: {full}/{len(rows)} prompts identical to llama.cpp for all tokens")
        for rid, s, n in rows:
            print(f"  {rid:8s} {s:3d}/{n:<3d} tokens before the first divergence")


if __name__ == "__main__":
    main(sys.argv[1:])
