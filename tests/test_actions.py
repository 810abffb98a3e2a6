"""Actions (issue 18): a user's action file, written here, run by name through the real daemon
with the real default model (greedy, few tokens): from the CLI (`localai run`), reloaded when
the file changes, a broken file or a raising action answered with one line naming file and
line while the other actions keep working; `commit-message` on a real git repository's staged
diff; the registry, the context needs and the built-ins' post-processors without a model.
The shells and Neovim run the same file in tests/test_shell.py and tests/test_nvim.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from localai import actions
from localai.actions import registry as reg
from localai.actions_client import action_params, run_action
from localai.client import Client, DaemonError
from test_daemon_support import run_cli, shared_daemon

# A user's action: a prompt builder, a post-processor and a context need (`filetype`, which
# the daemon works out from --file when the caller does not say it).
USER_ACTION = textwrap.dedent('''
    from localai.actions import action, Context

    def tag(answer, ctx):
        return "{mark}" + ctx.filetype + ": " + answer.strip().splitlines()[0].upper()

    @action(help="repeat the selection, tagged with its file type", needs=["text", "filetype"],
            output="show", post=tag, temperature=0, max_tokens=8)
    def echo_tag(ctx: Context):
        return [{{"role": "user", "content": "Repeat exactly: " + ctx.text.strip()}}]
''')
BROKEN = "from localai.actions import action\n\n@action(help='broken')\ndef half_done(ctx:\n"
RAISES = textwrap.dedent('''
    from localai.actions import action

    @action(help="always fails", needs=["text"])
    def boom(ctx):
        return 1 / 0
''')
TEXT = "print(1)"


def write_user_action(actions_dir: Path, mark: str = ">> ") -> Path:
    actions_dir.mkdir(parents=True, exist_ok=True)
    path = actions_dir / "mine.py"
    path.write_text(USER_ACTION.format(mark=mark))
    st = path.stat()  # a rewrite within the same clock tick still reads as a change
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return path


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    return shared_daemon()


@pytest.fixture
def actions_dir(daemon):
    """The shared daemon's user actions folder ($XDG_CONFIG_HOME/localai/actions), emptied after."""
    d = Path(daemon["env"]["XDG_CONFIG_HOME"]) / "localai" / "actions"
    d.mkdir(parents=True, exist_ok=True)
    yield d
    for f in d.iterdir():
        f.unlink()


def direct(daemon, name: str, **context) -> dict:
    with Client(daemon["path"], autostart=False) as c:
        return run_action(c, action_params(name, **context))


def test_a_user_action_runs_from_the_cli_reloads_and_survives_broken_files(daemon, actions_dir, tmp_path):
    write_user_action(actions_dir)
    src = tmp_path / "x.py"
    src.write_text(TEXT + "\n")
    listing = run_cli(["actions"], daemon["env"])
    assert listing.returncode == 0 and "echo-tag" in listing.stdout and str(actions_dir / "mine.py") in listing.stdout

    r = run_cli(["run", "echo-tag", "--file", str(src), TEXT], daemon["env"])
    assert r.returncode == 0, r.stderr
    want = direct(daemon, "echo-tag", text=TEXT, file=str(src))
    assert want["answer"] and want["text"] == ">> python: " + want["answer"].strip().splitlines()[0].upper()
    assert r.stdout == want["text"] + "\n"
    piped = run_cli(["run", "echo-tag", "--file", str(src)], daemon["env"], input=TEXT)  # stdin is the text
    assert piped.stdout == r.stdout

    # editing the file changes the result; the daemon was not restarted
    pid = daemon["proc"].pid
    write_user_action(actions_dir, mark="## ")
    r2 = run_cli(["run", "echo-tag", "--file", str(src), TEXT], daemon["env"])
    assert r2.returncode == 0 and r2.stdout == "## " + r.stdout[3:], (r.stdout, r2.stdout, r2.stderr)
    assert daemon["proc"].pid == pid and daemon["proc"].poll() is None

    # a file that does not import: named with its line; the other actions still work
    (actions_dir / "broken.py").write_text(BROKEN)
    (actions_dir / "raises.py").write_text(RAISES)
    listing = run_cli(["actions"], daemon["env"])
    assert f"localai: error: {actions_dir / 'broken.py'}:4: SyntaxError" in listing.stderr, listing.stderr
    assert "boom" in listing.stdout and "echo-tag" in listing.stdout
    r3 = run_cli(["run", "half-done", TEXT], daemon["env"])
    assert r3.returncode == 1 and "no action named 'half-done'" in r3.stderr and "broken.py:4" in r3.stderr
    r4 = run_cli(["run", "boom", TEXT], daemon["env"])
    assert r4.returncode == 1 and r4.stderr.count("\n") == 1 and "Traceback" not in r4.stderr
    assert f"{actions_dir / 'raises.py'}:6: ZeroDivisionError" in r4.stderr, r4.stderr
    assert run_cli(["run", "echo-tag", "--file", str(src), TEXT], daemon["env"]).stdout == r2.stdout
    # a missing need: one line saying what to give
    r5 = run_cli(["run", "echo-tag"], daemon["env"])
    assert r5.returncode == 1 and "needs the selection, the TEXT argument or stdin" in r5.stderr, r5.stderr


def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def test_commit_message_of_a_staged_diff(daemon, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "greet.py").write_text("def greet():\n    print('hello')\n")
    _git(repo, "add", "greet.py")
    _git(repo, "commit", "-qm", "first")
    env = dict(daemon["env"])
    nothing = subprocess.run([sys.executable, "-m", "localai", "run", "commit-message"], cwd=repo, env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert nothing.returncode == 1 and f"nothing is staged in {repo}: `git add`" in nothing.stderr

    plain = tmp_path / "plain"  # no repository: one line saying so, not git's usage text
    plain.mkdir()
    outside = subprocess.run([sys.executable, "-m", "localai", "run", "commit-message"], cwd=plain, env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert outside.returncode == 1 and f"{plain} is not in a git repository" in outside.stderr, outside.stderr
    assert "usage" not in outside.stderr

    (repo / "greet.py").write_text("def greet(name):\n    print('hello', name)\n")
    _git(repo, "add", "greet.py")
    r = subprocess.run([sys.executable, "-m", "localai", "run", "commit-message"], cwd=repo, env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    line = r.stdout.rstrip("\n")
    assert line and "\n" not in line and not line.startswith(("`", '"', "Commit message")), r.stdout
    # the daemon read the diff itself: the same as the prompt with the diff in it
    want = direct(daemon, "commit-message", cwd=str(repo))
    assert want["text"] == line
    diff = _git(repo, "diff", "--staged", "--no-color")
    with Client(daemon["path"], autostart=False) as c:
        ctx = actions.Context(git_diff_staged=diff)
        answer = c.call("chat", messages=actions.messages(actions.get("commit-message"), ctx),
                        temperature=0, max_tokens=48)["text"]
    assert actions.builtin.commit_line(answer) == line
    # the history keeps the prompt the daemon built: the staged diff
    rows = json.loads(run_cli(["logs", "--json", "-q", "print('hello', name)"], env).stdout)
    runs = [row for row in rows if row["action"] == "commit-message"]
    assert runs and all("+def greet(name):" in row["prompt"] for row in runs), rows


# --- without a model ------------------------------------------------------------------------------

def test_registry_loads_reloads_and_reports_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    extra = tmp_path / "extra.py"
    extra.write_text(RAISES)
    r = reg.Registry([str(extra)])
    r.refresh()
    assert "boom" in r.table() and r.errors() == []
    d = Path(reg.user_dir())
    write_user_action(d)
    (d / "broken.py").write_text(BROKEN)
    listing = r.listing()
    names = {a["name"]: a for a in listing["actions"]}
    assert names["echo-tag"]["source"] == str(d / "mine.py") and names["echo-tag"]["needs"] == ["text", "filetype"]
    assert names["cmd"]["output"] == "commandline" and names["echo-tag"]["output"] == "show"
    assert listing["errors"] == [{"file": str(d / "broken.py"), "line": 4,
                                  "message": listing["errors"][0]["message"]}]
    assert listing["errors"][0]["message"].startswith("SyntaxError")
    with pytest.raises(actions.ActionError, match=r"prompt builder at .*extra.py:6: ZeroDivisionError"):
        reg.bind(r, "boom", {"text": "x"})
    with pytest.raises(actions.MissingContext, match="needs the selection"):
        reg.bind(r, "echo-tag", {})
    run = reg.bind(r, "echo-tag", {"text": "hi", "file": "/a/b.lua"})  # filetype from the file name
    assert run.ctx.filetype == "lua" and run.messages[-1]["content"] == "Repeat exactly: hi"
    (d / "broken.py").unlink()
    assert r.listing()["errors"] == []
    with pytest.raises(actions.UnknownAction, match="no action named 'nope'; actions: add-docstring, boom"):
        r.get("nope")
    with pytest.raises(actions.ActionError, match="unknown context field"):
        reg.bind(r, "echo-tag", {"selection": "x"})


def test_action_filter_post_processes_and_stops():
    r = reg.Registry(include_user_dir=False)
    run = reg.bind(r, "cmd", {"text": "list files", "shell": "bash"})
    done = {}
    f = reg.ActionFilter(run, done)
    assert f.feed("```bash\n$ ls") == "```bash\n$ ls" and not f.done
    f.feed(" -l\n")
    assert f.done  # the command is complete: the rest would be thrown away
    f.finish()
    assert done["result"] == {"action": "cmd", "output": "commandline", "text": "ls -l"}
    # replace: fences and a preamble are dropped before the post-processor
    run = reg.bind(r, "add-docstring", {"text": "def f(x):\n    return x", "filetype": "python"})
    done = {}
    f = reg.ActionFilter(run, done)
    f.feed("Return the argument unchanged.")
    f.finish()
    assert done["result"]["text"] == 'def f(x):\n    """Return the argument unchanged."""\n    return x'


@pytest.mark.parametrize("code, want", [
    ("def f(a,\n      b):\n    return a", 'def f(a,\n      b):\n    """Doc."""\n    return a'),
    ("class A:\n\n    x = 1", 'class A:\n    """Doc."""\n\n    x = 1'),
    ("    async def g():  # hi\n        pass", '    async def g():  # hi\n        """Doc."""\n        pass'),
    ("def f(a, b): return a + b", 'def f(a, b):\n    """Doc."""\n    return a + b'),   # a one-line def
    ("def g(x) -> int: return x", 'def g(x) -> int:\n    """Doc."""\n    return x'),
])
def test_the_docstring_lands_inside_the_function(code, want):
    assert actions.builtin.insert_docstring("Doc", actions.Context(text=code, filetype="python")) == want


def test_the_api_refuses_mistakes_with_one_line():
    with pytest.raises(ValueError, match="output must be one of replace, insert, show, stdout, commandline"):
        actions.action(output="window")
    with pytest.raises(ValueError, match="unknown need 'git_diff'"):
        actions.action(needs=["git_diff"])
    with pytest.raises(TypeError, match="unknown keyword 'temp'"):
        actions.action(temp=0)


def test_action_params_are_light_and_absolute(tmp_path):
    p = action_params("fix", text="x", file="a.py", line=3, cwd=str(tmp_path), temperature=0, max_tokens=None)
    assert p == {"name": "fix", "context": {"text": "x", "file": str(tmp_path / "a.py"), "line": 3,
                                            "cwd": str(tmp_path)}, "temperature": 0}
    code = ("import sys, localai.actions_client; "
            "print(sorted(m for m in ('numpy', 'localai.engine', 'typer', 'localai.actions') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stderr


def test_the_protocol_lists_the_methods():
    from localai import protocol

    assert {"action", "actions"} <= set(protocol.METHODS)
    assert tuple(protocol.ACTION_CONTEXT) == __import__("localai.actions_client").actions_client.CONTEXT_KEYS
    with pytest.raises(protocol.ProtocolError, match="missing parameter `name`"):
        protocol.make_params("action", {"context": {}})
    assert json.loads(json.dumps(action_params("cmd", text="x")))["name"] == "cmd"
    with pytest.raises(DaemonError):
        raise DaemonError("unknown_action", "x")


def test_the_examples_of_docs_actions_md_load_and_work(tmp_path, monkeypatch):
    import re as _re

    doc = (Path(__file__).parent.parent / "docs" / "actions.md").read_text(encoding="utf-8")
    examples = _re.findall(r"`~/.config/localai/actions/(\w+\.py)`:\n\n```python\n(.*?)```", doc, _re.S)
    assert [name for name, _ in examples] == ["commit.py", "checklist.py"]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = Path(reg.user_dir())
    d.mkdir(parents=True)
    for name, code in examples:
        (d / name).write_text(code)
    r = reg.Registry()
    listing = r.listing()
    assert listing["errors"] == []
    names = {a["name"]: a for a in listing["actions"]}
    assert names["conventional-commit"]["needs"] == ["git_diff_staged"] and names["checklist"]["output"] == "replace"
    run = reg.bind(r, "conventional-commit", {"git_diff_staged": "diff --git a/x b/x\n+hi\n"})
    done = {}
    f = reg.ActionFilter(run, done)
    f.feed("```\nFix: handle empty input in the parser\n```")
    f.finish()
    assert done["result"]["text"] == "fix: handle empty input in the parser"
    run = reg.bind(r, "checklist", {"text": "buy milk, call Bob, pay rent, sleep", "filetype": "markdown"})
    assert "(markdown file)" in run.messages[0]["content"]
    done = {}
    f = reg.ActionFilter(run, done)
    f.feed("1. Buy milk\n2. Call Bob\n3. Pay rent\n")
    assert not f.done
    f.feed("4")
    assert f.done  # enough: three complete lines
    f.finish()
    assert done["result"]["text"].startswith("- [ ] Buy milk\n- [ ] Call Bob\n- [ ] Pay rent")


@pytest.mark.parametrize("answer, line", [
    ("```python\nAdd a name to greet\n```", "Add a name to greet"),   # a fence's language tag is not the message
    ("~~~\nCommit message: \"Greet by name\"\n~~~", "Greet by name"),
    ("`Greet by name`", "Greet by name"),
])
def test_commit_line_drops_fences_labels_and_quotes(answer, line):
    assert actions.builtin.commit_line(answer) == line
