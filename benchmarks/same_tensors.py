"""Do two GGUF files hold the same tensors (names in order, types, bytes)?

    python benchmarks/same_tensors.py A.gguf B.gguf     # prints "identical" (exit 0) or the differences (exit 1)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from localai.gguf_file import GGUFFile  # noqa: E402

a, b = GGUFFile(sys.argv[1]), GGUFFile(sys.argv[2])
if list(a.tensors) != list(b.tensors):
    print("tensor names or order differ")
    sys.exit(1)
nd = 0
for n, t in a.tensors.items():
    u = b.tensors[n]
    if t.type_name != u.type_name:
        print(f"{n}: {t.type_name} vs {u.type_name}")
        nd += 1
        continue
    x, y = np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8)
    if not np.array_equal(x, y):
        print(f"{n} ({t.type_name}): {np.count_nonzero(x != y)} bytes differ")
        nd += 1
print("identical" if nd == 0 else f"{nd} tensors differ")
sys.exit(1 if nd else 0)
