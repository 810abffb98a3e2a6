"""The shell integrations (plugins/shell/) in real bash, zsh and fish, driven through tmux
against the test daemon with the real model at temperature 0: `??` answers as the daemon
does, piped text is the question's context, the key binding puts the daemon's suggested
command on the line and runs nothing, an error leaves the line alone, Ctrl-C stops an answer,
`localai explain` sees the previous command, a missing `localai` is one clear line, a missing
daemon is started; sourcing runs no program and its time is measured. Plus the actions'
post-processing and `localai init` without a shell."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localai import actions
from localai.cli.talk import cut_note
from localai.client import Client
from shell_tmux import PROMPT, SOURCE_TIME, Tmux, have, shell_argv, shell_env, source_time_ms
from test_daemon_support import run_cli, shared_daemon

SHELLS = ("bash", "zsh", "fish")
PLUGINS = Path(__file__).resolve().parent.parent / "plugins" / "shell"
MAX_TOKENS = 24  # the config file's, for ask
SET_KEY = {"bash": "LOCALAI_SUGGEST_KEY='\\es'", "zsh": "LOCALAI_SUGGEST_KEY='^[s'",
           "fish": "set -g LOCALAI_SUGGEST_KEY \\es"}  # Alt-s, each in its shell's words


@pytest.fixture(scope="module")
def setup(smollm2_path, tmp_path_factory):
    daemon = shared_daemon()
    root = tmp_path_factory.mktemp("shell")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "localai").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m localai "$@"\n')
    (bin_dir / "localai").chmod(0o755)
    config = root / "config.toml"
    config.write_text(f"[sampling]\ntemperature = 0.0\nmax_tokens = {MAX_TOKENS}\n")
    (root / "bad.toml").write_text('model = "no-such-model"\n')
    env = dict(daemon["env"], PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", LOCALAI_CONFIG=str(config),
               LOCALAI_MODELS=str(smollm2_path.parent))
    inits = {}
    for shell in SHELLS:  # what `localai init <shell>` prints is what the shells load
        r = run_cli(["init", shell], env)
        assert r.returncode == 0, r.stderr
        inits[shell] = root / f"init.{shell}"
        inits[shell].write_text(r.stdout)
    return {"root": root, "env": env, "inits": inits, "socket": daemon["path"], "bin": bin_dir}


def _ask(setup, content: str, **kw) -> str:
    """What `ask` shows in the terminal: the daemon's answer, then the note on stderr when
    the token limit cut it."""
    with Client(setup["socket"], autostart=False) as c:
        done = c.call("chat", messages=[{"role": "user", "content": content}], temperature=0,
                      max_tokens=kw.get("max_tokens", MAX_TOKENS), cache_prompt=kw.get("cache_prompt", True))
    if done["finish_reason"] == "length":
        text = done["text"] if done["text"].endswith("\n") else done["text"] + "\n"
        return text + cut_note(done["timings"]["predicted_n"])
    return done["text"]


def _action(setup, name: str, text: str, shell: str, **kw) -> str:
    with Client(setup["socket"], autostart=False) as c:
        return actions.run(c, name, text, actions.Context(shell=shell), **kw)


def _start(shell: str, setup, home: Path, **env) -> Tmux:
    home.mkdir(parents=True, exist_ok=True)
    t = Tmux(shell_argv(shell, home, setup["inits"][shell]), shell_env({**setup["env"], **env}, home))
    t.wait_prompt(1, 15)
    return t


def _output_of(t: Tmux, command_line: str) -> str:
    """What the command on the line `command_line` printed, up to the next prompt."""
    lines = t.lines()
    start = max(i for i, line in enumerate(lines) if line.startswith(PROMPT + command_line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(PROMPT))
    return "\n".join(line.rstrip() for line in lines[start + 1:end])


def _run(t: Tmux, line: str, shown: str | None = None, timeout: float = 60) -> str:
    """Run `line` at the prompt, wait for the next prompt, return its output. `shown` is the
    line as the shell leaves it on the screen (fish expands abbreviations)."""
    n = t.prompts()
    t.run(line)
    t.wait_prompt(n + 1, timeout)
    return _output_of(t, shown or line)


def _screen_text(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


@pytest.mark.skipif(not have("tmux", *SHELLS), reason="needs tmux, bash, zsh and fish (apt-get install bash zsh fish tmux)")
@pytest.mark.parametrize("shell", SHELLS)
def test_shell_integration(shell, setup, tmp_path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    t = _start(shell, setup, tmp_path / "home")
    try:
        # sourcing ran no program (PATH pointed nowhere: nothing complained) and was quick
        assert not re.search(r"not found|nknown command|rror", t.screen()), t.screen()
        if shell != "fish":
            _run(t, SOURCE_TIME[shell])
        ms = source_time_ms(shell, t.screen())
        print(f"sourcing the {shell} integration took {ms:.2f} ms")
        assert ms < 50  # the target is 20 ms; a loaded machine gets some slack
        _run(t, f"cd {cwd}")

        # `??`: no quotes, a `?` that would glob in bash and zsh; the daemon's own answer
        q = "what is my ip?"
        (cwd / "ipa").write_text("")  # `ip?` would match this file if it were globbed
        shown = f"ask -- '{q}'"  # what Enter made of the line: the question quoted
        assert _run(t, f"?? {q}", shown) == _screen_text(_ask(setup, q))
        assert _run(t, "echo ip?") == "ipa"  # and globbing works again afterwards

        # piped text is the context
        out = _run(t, "printf 'The sky is green.\\n' | ask Repeat this:")
        assert out == _screen_text(_ask(setup, "Repeat this:\n\nThe sky is green.\n"))

        # the key binding: the line becomes the daemon's command; nothing runs
        desc = "touch a file named sentinel"
        expected = _action(setup, "cmd", desc, shell)
        n = t.prompts()
        t.type(desc)
        t.wait(re.escape(PROMPT + desc))
        t.keys("M-a")
        t.wait(rf"^{re.escape(PROMPT + expected)}\s*$", 60)
        time.sleep(0.3)
        assert t.prompts() == n and not (cwd / "sentinel").exists()
        t.keys("C-u")

        # another key (LOCALAI_SUGGEST_KEY, read when the integration is sourced); an error (a
        # model that does not exist) leaves the line as it was and says why
        _run(t, f"{SET_KEY[shell]}; source {setup['inits'][shell]}")
        set_bad = (f"set -gx LOCALAI_CONFIG {setup['root']}/bad.toml" if shell == "fish"
                   else f"export LOCALAI_CONFIG={setup['root']}/bad.toml")
        _run(t, set_bad)
        t.type("list the files")
        t.keys("M-s")
        t.wait(r"localai: error: .*no-such-model", 30)
        t.wait(rf"^{re.escape(PROMPT)}list the files\s*$")
        t.keys("C-u")
        _run(t, set_bad.replace("bad.toml", "config.toml"))

        # `localai explain` explains the previous command
        _run(t, "echo hello")
        out = _run(t, "localai explain -n 12")
        assert out == _screen_text(_action(setup, "explain", "echo hello", shell, max_tokens=12, temperature=0.0))

        # Ctrl-C stops an answer and the prompt comes back; the daemon stops generating
        n = t.prompts()
        story = "ask -n 400 Write a very long story about a dragon who learns to read."
        t.run(story)
        deadline = time.monotonic() + 60
        while len(t.screen().split(story, 1)[-1].split()) < 4:  # the answer streams
            assert time.monotonic() < deadline, t.screen()
            time.sleep(0.05)
        t.keys("C-c")
        t.wait_prompt(n + 1, 15)
        assert _run(t, "echo rc=$status" if shell == "fish" else "echo rc=$?") == "rc=130"
        deadline = time.monotonic() + 10
        with Client(setup["socket"], autostart=False) as c:
            while c.call("status")["active"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert c.call("status")["active"] == 0

        # `localai` missing from PATH: one clear line
        hide = ("set -l p $PATH; set PATH /usr/bin /bin; ask hi; set PATH $p" if shell == "fish"
                else "p=$PATH; PATH=/usr/bin:/bin; ask hi; PATH=$p")
        out = _run(t, hide)
        assert out == ("localai: the localai command is not in PATH; install it (`pip install .` in a "
                       "clone of localai) or fix PATH"), out
    finally:
        t.close()


@pytest.mark.skipif(not have("tmux", "bash"), reason="needs tmux and bash")
def test_a_missing_daemon_is_started(setup, tmp_path):
    sock = tmp_path / "run" / "localai.sock"
    t = _start("bash", setup, tmp_path / "home", LOCALAI_SOCKET=str(sock))
    try:
        assert not sock.exists()
        q = "Say hello."
        out = _run(t, f"?? {q}", f"ask -- '{q}'", timeout=90)  # Enter quotes the question
        # the fresh daemon prefilled the prompt cold, in one batch: so does the reference (a
        # partial cache hit splits the prefill, and the kernels are not batch-invariant yet, #13)
        assert out == _screen_text(_ask(setup, q, cache_prompt=False))
        assert "localai daemon: running" in _run(t, "localai status")
    finally:
        _run(t, "localai stop")
        t.close()


# --- without a shell ---------------------------------------------------------------------------

def test_init_prints_the_plugin_files_and_names_the_shells(tmp_path):
    env = dict(os.environ, LOCALAI_SOCKET=str(tmp_path / "none.sock"))
    for shell in SHELLS:
        r = run_cli(["init", shell], env)
        assert r.returncode == 0 and r.stdout == (PLUGINS / f"localai.{shell}").read_text()
    r = run_cli(["init", "tcsh"], env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "localai: error: no integration for the shell 'tcsh'; shells: bash, zsh, fish\n"
    assert not (tmp_path / "none.sock").exists()  # no daemon needed


@pytest.mark.parametrize("answer, command", [
    ("ls -lS", "ls -lS"),
    ("ls -lS\n\nThis lists the files, largest first.", "ls -lS"),
    ("```bash\n$ find . -size +100M\n```\nThis finds big files.", "find . -size +100M"),
    ("Here is the command:\n\n```\n# big files\nfind . -size +100M \\\n  -type f\n```", "find . -size +100M -type f"),
    ("To list them, use `du -sh *` in the directory.", "du -sh *"),
    ("`df -h` shows the free space", "df -h"),
    ("```sh find . -name '*.py'```", "find . -name '*.py'"),
    ("$ git log --oneline", "git log --oneline"),
    ("Sure:\n% echo hi", "echo hi"),
    ("", ""),
    ("Here you go:\n\n", ""),
])
def test_first_command_keeps_one_command_line(answer, command):
    assert actions.first_command(answer) == command


def test_cmd_stops_once_the_command_is_complete():
    assert not actions.command_complete("ls -l")          # the line may go on
    assert actions.command_complete("ls -l\nThis")
    assert not actions.command_complete("```bash\n")
    assert not actions.command_complete("find . \\\n")      # continued on the next line
    assert not actions.command_complete("Here is the command:\n")


def test_actions_table_and_the_client_path_imports_no_numpy():
    assert {"cmd", "explain"} <= set(actions.ACTIONS)
    p = actions.params("cmd", "list files", actions.Context(shell="fish", os="Linux"), max_tokens=5, model=None)
    assert "fish command for Linux" in p["messages"][0]["content"] and p["messages"][-1]["content"] == "list files"
    assert p["max_tokens"] == 5 and p["temperature"] == 0.0 and "model" not in p
    with pytest.raises(actions.ActionError, match="no action named 'nope'; actions: add-docstring, cmd, commit-message, explain"):
        actions.get("nope")
    code = ("import sys, localai.cli, localai.cli.shell_cmds, localai.actions, localai.client; "
            "print(sorted(m for m in ('numpy', 'localai.engine') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stderr


# --- `??` takes the rest of the line as typed (issue 11) ----------------------------------------

TYPED = """what's in $HOME/*.txt; say "hi" & 'bye' (really)?"""


@pytest.mark.skipif(not have("tmux", *SHELLS), reason="needs tmux, bash, zsh and fish (apt-get install bash zsh fish tmux)")
@pytest.mark.parametrize("shell", SHELLS)
def test_the_question_reaches_the_model_as_typed(shell, setup, tmp_path):
    """Quotes, `$HOME`, `*`, `;`, `&` and parentheses after `??`: the shell neither expands nor
    parses them (zsh and bash used to expand `$HOME` and wait at `quote>`; fish's
    abbreviation lost the double quotes). The `localai` program on PATH records its
    arguments, then runs: the answer is the daemon's answer to exactly that text."""
    record = tmp_path / "argv"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "localai").write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{record}'\n"
                                     f'exec "{sys.executable}" -m localai "$@"\n')
    (bin_dir / "localai").chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text("[sampling]\ntemperature = 0.0\nmax_tokens = 4\n")
    t = _start(shell, setup, tmp_path / "home", PATH=f"{bin_dir}{os.pathsep}{setup['env']['PATH']}",
               LOCALAI_CONFIG=str(config))
    try:
        n = t.prompts()
        t.type(f"?? {TYPED}")
        t.keys("Enter")
        t.wait_prompt(n + 1, 90)
        assert record.read_bytes().split(b"\0")[:-1] == [b"ask", b"--", TYPED.encode()], t.screen()
        lines = t.lines()
        start = max(i for i, line in enumerate(lines) if line.startswith(PROMPT) and "really" in line)
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(PROMPT))
        shown = "\n".join(line.rstrip() for line in lines[start + 1:end])
        assert shown == _screen_text(_ask(setup, TYPED, max_tokens=4))
        # what the line became (and history keeps) runs again the same way
        record.unlink()
        t.keys("Up")
        time.sleep(0.3)
        t.keys("Enter")
        t.wait_prompt(n + 2, 90)
        assert record.read_bytes().split(b"\0")[:-1] == [b"ask", b"--", TYPED.encode()], t.screen()
    finally:
        t.close()


@pytest.mark.skipif(not have("tmux", *SHELLS), reason="needs tmux, bash, zsh and fish (apt-get install bash zsh fish tmux)")
@pytest.mark.parametrize("shell", SHELLS)
def test_a_suggestion_that_deletes_comes_with_a_warning(shell, setup, tmp_path):
    from localai.danger import warning

    cwd = tmp_path / "work"
    (cwd / "build").mkdir(parents=True)
    desc = "delete the build directory and everything in it"
    expected = _action(setup, "cmd", desc, shell)
    warn = warning(expected)
    assert warn, f"the model's suggestion is no longer a deleting one: {expected!r}"  # the case under test
    t = _start(shell, setup, tmp_path / "home")
    try:
        _run(t, f"cd {cwd}")
        n = t.prompts()
        t.type(desc)
        t.wait(re.escape(PROMPT + desc))
        t.keys("M-a")
        t.wait(rf"^{re.escape(PROMPT + expected)}\s*$", 120)
        t.wait(re.escape(warn), 10)  # shown before Enter could run it
        time.sleep(0.3)
        assert t.prompts() <= n + 1  # bash redraws its prompt under the warning; Enter was not pressed
        assert (cwd / "build").is_dir()  # nothing ran
        t.keys("C-u")
    finally:
        t.close()


def _completion_tables() -> dict:
    """shell -> (commands, {command: options}) as the integration files list them."""
    out = {}
    for shell in ("bash", "zsh"):
        text = (PLUGINS / f"localai.{shell}").read_text()
        commands = set(re.search(r"^__localai_commands='([^']*)'", text, re.M).group(1).split())
        options = {m.group(1): set(m.group(2).split())
                   for m in re.finditer(r"^\s+([a-z-]+)\) REPLY='([^']*)' ;;", text, re.M)}
        out[shell] = (commands, options)
    text = (PLUGINS / "localai.fish").read_text()
    commands = set(re.search(r"^set -g __localai_commands (.*)$", text, re.M).group(1).split())
    options = {m.group(1): set(m.group(2).split())
               for m in re.finditer(r"^\s+case ([a-z-]+)\n\s+echo '([^']*)'", text, re.M)}
    out["fish"] = (commands, options)
    return out


def test_completion_lists_every_command_and_option_of_the_cli():
    import click
    import typer.main

    from localai.cli import get_app

    app = typer.main.get_command(get_app())
    for shell, (commands, options) in _completion_tables().items():
        assert set(app.commands) <= commands, (shell, set(app.commands) - commands)
        for name, command in app.commands.items():
            want = {o for p in command.params if not isinstance(p, click.Argument) and type(p).__name__ != "TyperArgument"
                    for o in p.opts + p.secondary_opts}
            assert want | {"--help", "-h"} <= options.get(name, set()), (shell, name, want - options.get(name, set()))


def test_completion_knows_the_built_in_actions():
    from localai.actions import ACTIONS
    from localai.actions import builtin  # noqa: F401  (defines them)

    for name in ("localai.bash", "localai.zsh", "localai.fish"):
        text = (Path(__file__).parent.parent / "plugins" / "shell" / name).read_text()
        m = re.search(r"__localai_action_names[= ]'?([a-z -]+?)'?\s+#", text)
        assert m and set(m.group(1).split()) == set(ACTIONS), (name, m and m.group(1))


@pytest.mark.skipif(not have("tmux", *SHELLS), reason="needs tmux, bash, zsh and fish (apt-get install bash zsh fish tmux)")
@pytest.mark.parametrize("shell", SHELLS)
def test_tab_completes_commands_options_and_models(shell, setup, tmp_path):
    cache = tmp_path / "cache"
    t = _start(shell, setup, tmp_path / "home", XDG_CACHE_HOME=str(cache))
    try:
        if shell == "zsh":  # completion needs compinit, loaded before the integration
            _run(t, f"autoload -Uz compinit && compinit -u -D && source {setup['inits'][shell]}")
        for typed, completed in (("localai comp", "localai complete "), ("localai ask --max-t", "localai ask --max-tokens "),
                                 ("localai show smol", "localai show smollm2 "),
                                 ("localai ask -m gemma3-2", "localai ask -m gemma3-270m "),
                                 ("localai run commit-m", "localai run commit-message ")):  # built-in, no file yet
            t.type(typed)
            t.keys("Tab")
            t.wait(rf"^{re.escape(PROMPT + completed)}\s*$", 10)
            t.keys("C-u")
        # the names a daemon's action registry wrote: the user's actions too
        from localai.actions.registry import Registry

        user_actions = tmp_path / "actions.py"
        user_actions.write_text("from localai.actions import action\n\n"
                                "@action(help='Say the tag.', needs=['text'])\n"
                                "def zebra_tag(ctx):\n    return ctx.text\n")
        old = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(cache)
        try:
            Registry([str(user_actions)], include_user_dir=False).refresh()
        finally:
            os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.__setitem__("XDG_CACHE_HOME", old)
        assert "zebra-tag" in (cache / "localai" / "action-names").read_text().split()
        for typed, completed in (("localai run zeb", "localai run zebra-tag "),):
            t.type(typed)
            t.keys("Tab")
            t.wait(rf"^{re.escape(PROMPT + completed)}\s*$", 10)
            t.keys("C-u")
        assert _run(t, "echo done") == "done"  # completing ran nothing and broke nothing
    finally:
        t.close()
