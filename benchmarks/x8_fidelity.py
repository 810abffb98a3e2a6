"""Which matrices may take int8 x: the fidelity tests against llama.cpp (tests/test_reference.py,
logits and teacher-forced greedy) with int8 x on the dense feed-forward matrices (`ffn`, the
default, as localai/ops/numpy.py has it), on those and the attention's (`ffn+attn`), on every
matrix of the layers (`all`: the MoE router too), on the attention's alone, or on none; add
`--arch` for the tiny random-weight models of tests/test_arch.py. Only where the kernel has
the int8 tile (x86 AVX2 without AVX-512); prints the tests' figures.

    python benchmarks/x8_fidelity.py all
    python benchmarks/x8_fidelity.py ffn+attn --arch
"""
from __future__ import annotations

import re
import sys

import pytest

PATTERNS = {"ffn": r"blk\.\d+\.ffn_(gate|up|down)\.weight", "all": r"blk\.\d+\.[\w.]+\.weight",
            "ffn+attn": r"blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down))\.weight",
            "attn": r"blk\.\d+\.attn_.*\.weight", "none": r"(?!)"}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "ffn"
    from localai.ops import numpy as ops
    ops._X8_NAMES = re.compile(PATTERNS[which])
    tests = ["tests/test_arch.py"] if "--arch" in sys.argv else ["tests/test_reference.py", "-k", "logits or greedy"]
    sys.exit(pytest.main(["-q", "-s", "-p", "no:cacheprovider", *tests]))


if __name__ == "__main__":
    main()
