"""Real interactive shells in a pseudo-terminal, driven through tmux: type keys, read the
screen as the user sees it (line editors redraw, so the screen is easier to check than the
byte stream). Used by tests/test_shell.py."""
from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

PROMPT = "LAI> "  # every test shell uses this prompt
_ids = itertools.count()


def shell_argv(shell: str, home: Path, init: Path) -> list:
    """Start `shell` interactively with only the integration (`init`, a file) loaded. It is
    sourced with PATH pointing nowhere (any program it ran would fail loudly), timed: bash and
    zsh keep the times in __lai_t0/__lai_t1, fish prints `time`'s report."""
    if shell == "bash":
        rc = home / "rc.bash"
        rc.write_text(f"PS1='{PROMPT}'\n__lai_path=$PATH; PATH=/nonexistent\n"
                      f"__lai_t0=$EPOCHREALTIME; source {init}; __lai_t1=$EPOCHREALTIME\nPATH=$__lai_path\n")
        return ["bash", "--noprofile", "--rcfile", str(rc), "-i"]
    if shell == "zsh":  # ZDOTDIR=home, from shell_env
        (home / ".zshrc").write_text(f"PS1='{PROMPT}'\nzmodload zsh/datetime\n__lai_path=$PATH; PATH=/nonexistent\n"
                                     f"__lai_t0=$EPOCHREALTIME; source {init}; __lai_t1=$EPOCHREALTIME\n"
                                     f"PATH=$__lai_path\n")
        return ["zsh", "-i"]
    if shell == "fish":
        rc = home / "rc.fish"
        rc.write_text(f"function fish_prompt; printf '{PROMPT}'; end\nfunction fish_greeting; end\n"
                      f"set -g fish_autosuggestion_enabled 0\n"
                      f"set -l __lai_path $PATH; set PATH /nonexistent\ntime source {init}\nset PATH $__lai_path\n")
        return ["fish", "--no-config", "--init-command", f"source {rc}"]
    raise ValueError(shell)


# Typed at the prompt: prints how long sourcing took, `src_us=N` (fish's `time` has printed it).
SOURCE_TIME = {
    "bash": "echo src_us=$(( ${__lai_t1/./} - ${__lai_t0/./} ))",
    "zsh": "echo src_us=$(( (__lai_t1 - __lai_t0) * 1e6 ))",
}


def source_time_ms(shell: str, screen: str) -> float:
    if shell == "fish":
        m = re.search(r"Executed in\s+([\d.]+) (micros|millis|secs)", screen)
        return float(m.group(1)) * {"micros": 1e-3, "millis": 1.0, "secs": 1e3}[m.group(2)]
    return int(re.search(r"^src_us=(\d+)", screen, re.M).group(1)) / 1000


def shell_env(base: dict, home: Path) -> dict:
    env = dict(base, ZDOTDIR=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               TERM="xterm-256color", LANG="C.UTF-8", HISTFILE="/dev/null")
    env.pop("TMUX", None)
    return env


class Tmux:
    def __init__(self, argv: list, env: dict, width: int = 220, height: int = 200):
        self.server = f"localai-test-{os.getpid()}-{next(_ids)}"
        self.env = env
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t", *argv)

    def _tmux(self, *args, check=True) -> str:
        r = subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", *args], env=self.env,
                           capture_output=True, text=True, timeout=10)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def type(self, text: str) -> None:
        """Type `text` literally (each character a key press)."""
        self._tmux("send-keys", "-t", "t", "-l", text)

    def keys(self, *names: str) -> None:
        """Press named keys: Enter, C-c, M-a, ..."""
        self._tmux("send-keys", "-t", "t", *names)

    def run(self, line: str) -> None:
        self.type(line)
        self.keys("Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", "t")

    def lines(self) -> list:
        return self.screen().rstrip("\n").split("\n")

    def wait(self, pattern: str, timeout: float = 30.0, count: int = 1) -> re.Match:
        """Wait until the screen matches `pattern` (a regex) at least `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            found = list(re.finditer(pattern, text, re.M))
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; the screen:\n{text}")
            time.sleep(0.05)

    def prompts(self) -> int:
        return sum(1 for line in self.lines() if line.startswith(PROMPT))

    def wait_prompt(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` prompts are on the screen (the last one empty: ready for input)."""
        self.wait(rf"^{re.escape(PROMPT)}", timeout, count)

    def last_line(self) -> str:
        """The last non-empty line of the screen (the command line being edited)."""
        return [line for line in self.lines() if line.strip()][-1]

    def close(self) -> None:
        self._tmux("kill-server", check=False)


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)
