"""Start another Python process on a localai module so that it imports the installed localai,
whatever the current directory holds.

`python -m localai.daemon` puts the current directory first on sys.path, so a source checkout
there (`localai/` without its `kernels`) or a file named `queue.py` shadows the installed
package. `-I` would fix that but also drop PYTHONPATH and the user site-packages, where
`pip install --user` puts localai; `-P` does exactly this but needs Python 3.11. The small
bootstrap below drops only the current directory's entry, on every Python localai supports.
"""
from __future__ import annotations

import sys

_BOOT = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
         "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


def module_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args...` with the current directory off sys.path."""
    return [sys.executable, "-c", _BOOT, module, *args]
