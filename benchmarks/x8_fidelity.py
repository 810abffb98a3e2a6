"""Which matrices may take int8 x: the fidelity tests against llama.cpp (tests/test_reference.py,
logits and teacher-forced greedy) with int8 x on the dense feed-forward matrices (`ffn`, the
default here), on those and the attention's (`ffn+attn`, what localai/ops/numpy.py does for
activation bits 8), on every matrix of the layers (`all`: the MoE router too), on the
attention's alone, or on none; `--arch`: the tiny random-weight models of tests/test_arch.py instead;
`--answers`: two of SmolLM2's greedy answers that llama.cpp gives (the capital of France, a
rewrite that copies its selection). Only where the kernel has the int8 tile (x86 AVX2
without AVX-512); prints the tests' figures.

    python benchmarks/x8_fidelity.py all
    python benchmarks/x8_fidelity.py ffn+attn --arch
    python benchmarks/x8_fidelity.py ffn --answers
"""
from __future__ import annotations

import re
import sys

import pytest

PATTERNS = {"ffn": r"blk\.\d+\.ffn_(gate|up|down)\.weight", "all": r"blk\.\d+\.[\w.]+\.weight",
            "ffn+attn": r"blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down))\.weight",
            "attn": r"blk\.\d+\.attn_.*\.weight", "none": r"(?!)",
            "ffn+attn+output": r"blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down))\.weight|output\.weight|token_embd\.weight"}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "ffn"
    import os
    os.environ["LOCALAI_ACTIVATION_BITS"] = "8"  # the models' matrices named below take int8 x
    from localai.ops import numpy as ops
    ops._X8_NAMES = re.compile(PATTERNS[which])
    tests = (["tests/test_arch.py"] if "--arch" in sys.argv else
             ["tests/test_reference.py::test_chat_answers_sensibly",
              "tests/test_speculative.py::test_code_rewrite_copies_the_selection"] if "--answers" in sys.argv else
             ["tests/test_reference.py", "-k", "logits or greedy"])
    sys.exit(pytest.main(["-q", "-s", "-p", "no:cacheprovider", *tests]))


if __name__ == "__main__":
    main()
