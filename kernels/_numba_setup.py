"""Where numba keeps the compiled kernels, and one line on stderr when it compiles them.

numba's default for `cache=True` is a `__pycache__` beside the source, i.e. inside the
install: the files outlive `pip uninstall` and turn `localai` into a namespace package that
breaks the next install. The kernels are cached in `$XDG_CACHE_HOME/localai/numba`
(`~/.cache/localai/numba`) instead, unless NUMBA_CACHE_DIR says otherwise.

Depends on the standard library; numba itself is imported only by `announce_compiles`.
"""
from __future__ import annotations

import os
import sys

NOTICE = "compiling the CPU kernels once (~15 s); later runs load them from {dir}"

_say = None  # where the notice goes: None prints it on stderr (see set_compile_notice)
_said = False


def cache_dir() -> str:
    """numba's cache directory: NUMBA_CACHE_DIR if set, else $XDG_CACHE_HOME/localai/numba."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec ignores relative values
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "localai", "numba")


def configure() -> None:
    """Point numba's cache at `cache_dir()`; call before numba is imported (it reads the
    environment then, and again whenever the environment changes)."""
    path = cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = path
    if "numba.core.config" in sys.modules:  # numba came first: set its live config too
        sys.modules["numba.core.config"].CACHE_DIR = path


def set_compile_notice(say) -> None:
    """`say(text)` receives the compile notice instead of stderr (the daemon sends it to the
    client that waits); None restores stderr."""
    global _say
    _say = say


def announce_compiles() -> None:
    """Say once per process, before it starts, that numba compiles a kernel of this package.
    Loads from the cache are not compiles (numba fires no `numba:compile` event for them)."""
    from numba.core import event

    # localai.kernels._numba_setup -> "localai": the quantizers (localai/quantizers_numba.py) too
    package = __name__.rsplit(".", 2)[0] if __name__.count(".") >= 2 else __name__.rpartition(".")[0]

    class Notice(event.Listener):
        def on_start(self, ev):
            global _said
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            if _said or not getattr(func, "__module__", "").startswith(package):
                return
            _said = True
            text = NOTICE.format(dir=cache_dir())
            if _say is not None:
                _say(text)
            else:
                print(f"localai: {text}", file=sys.stderr, flush=True)

        def on_end(self, ev):
            pass

    event.register("numba:compile", Notice())
