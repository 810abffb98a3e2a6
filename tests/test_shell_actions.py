"""Actions from real bash, zsh and fish (issue 18), driven through tmux against the shared test
daemon with the real default model: `localai run` of a user's action file gives what the CLI
gives, a broken action file is one clear line and the other actions still work, and the action
key offers the actions for the command line (a `commandline` action's answer replaces it)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from shell_tmux import PROMPT, have
from test_actions import BROKEN, TEXT, write_user_action
from test_daemon_support import run_cli
from test_shell import SHELLS, _run, _screen_text, _start, setup  # noqa: F401  (setup: the fixture)


@pytest.fixture
def actions_dir(setup):  # noqa: F811
    d = Path(setup["env"]["XDG_CONFIG_HOME"]) / "localai" / "actions"
    d.mkdir(parents=True, exist_ok=True)
    yield d
    for f in d.iterdir():
        f.unlink()


@pytest.mark.skipif(not have("tmux", *SHELLS), reason="needs tmux, bash, zsh and fish (apt-get install bash zsh fish tmux)")
@pytest.mark.parametrize("shell", SHELLS)
def test_localai_run_and_the_action_key(shell, setup, actions_dir, tmp_path):  # noqa: F811
    write_user_action(actions_dir)
    src = tmp_path / "x.py"
    src.write_text(TEXT + "\n")
    cli = run_cli(["run", "echo-tag", "--file", str(src), TEXT], setup["env"])
    assert cli.returncode == 0 and cli.stdout.startswith(">> python: "), cli.stderr
    t = _start(shell, setup, tmp_path / "home")
    try:
        _run(t, f"cd {tmp_path}")
        assert _run(t, f"localai run echo-tag --file x.py '{TEXT}'") == _screen_text(cli.stdout + cli.stderr)  # the cut note on stderr shows too

        # a broken action file: one line naming it; the other actions work
        (actions_dir / "broken.py").write_text(BROKEN)
        out = _run(t, "localai run half-done hello")
        assert out.startswith("localai: error: no action named 'half-done'") and "broken.py:4: SyntaxError" in out, out
        assert _run(t, f"localai run echo-tag --file x.py '{TEXT}'") == _screen_text(cli.stdout + cli.stderr)  # the cut note on stderr shows too
        (actions_dir / "broken.py").unlink()

        # the action key: the menu, a number, Enter; `cmd` puts its command on the line
        names = run_cli(["actions", "--names"], setup["env"]).stdout.split()
        desc = "list the files in this directory"
        want = run_cli(["run", "cmd", "--shell", shell, desc], setup["env"]).stdout.strip()
        n = t.prompts()
        t.type(desc)
        t.wait(re.escape(PROMPT + desc))
        t.keys("M-r")
        t.wait(r"\d+\) cmd ")
        t.wait(r"action number, Enter: ")
        t.type(str(names.index("cmd") + 1))
        t.keys("Enter")
        t.wait(rf"^{re.escape(PROMPT + want)}\s*$", 90)
        time.sleep(0.3)
        assert t.last_line().rstrip() == PROMPT + want
        t.keys("C-u")
        assert t.prompts() >= n
    finally:
        t.close()
