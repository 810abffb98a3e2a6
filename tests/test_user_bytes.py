"""Bytes that are not UTF-8, on stdin, in --file or in an argument, are decoded the same way
by every command (invalid bytes replaced) and never end in a traceback: the real `localai`
CLI against a real daemon on a temporary socket. tests/data/invalid_utf8.txt is the field
case (see README)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_daemon_support import greedy_chat, shared_daemon

BAD = Path(__file__).parent / "data" / "invalid_utf8.txt"
DECODED = BAD.read_bytes().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def _cli(args: list, env, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "localai", *args], env=env, input=stdin, capture_output=True,
                       timeout=120, stdin=None if stdin is not None else subprocess.DEVNULL)
    assert b"Traceback" not in r.stderr, r.stderr.decode("utf-8", "replace")
    return r


@pytest.mark.parametrize("args", [
    ["ask", "-t", "0", "-n", "4", "What language is this text?"],
    ["rewrite", "-i", "Fix the spelling.", "-t", "0", "-n", "4"],
    ["complete", "-n", "2"],
    ["cmd", "-n", "8"],
    ["explain", "-n", "4"],
    ["chat", "-t", "0", "-n", "4"],
])
def test_invalid_utf8_on_stdin_is_replaced(env, args):
    r = _cli(args, env, stdin=BAD.read_bytes())
    # cmd may find no command in the answer: that is one line and exit 1, not a traceback
    assert r.returncode == 0 or (args[0] == "cmd" and r.returncode == 1 and len(r.stderr.splitlines()) == 1), r.stderr
    assert r.stdout.strip() or args[0] == "cmd"
    if args[0] == "ask":  # the model was given the text as `decode` gives it
        q = args[-1]
        assert r.stdout.decode() == greedy_chat([{"role": "user", "content": f"{q}\n\n{DECODED}"}], 4) + "\n"


def test_invalid_utf8_in_a_file_and_an_argument(env, tmp_path):
    for args in (["rewrite", "-i", "Fix the spelling.", "-t", "0", "-n", "4", "--file", str(BAD)],
                 ["complete", "-n", "2", "--json", "--file", str(BAD)]):
        r = _cli(args, env)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
    # an argument (Python gives it surrogate escapes, which used to fail on the way out)
    r = _cli(["ask", "--json", "-t", "0", "-n", "2", BAD.read_bytes()], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == greedy_chat([{"role": "user", "content": DECODED.strip()}], 2)
    missing = tmp_path / "no-such-file.txt"
    for cmd in (["rewrite", "-i", "x"], ["complete"]):
        r = _cli([*cmd, "--file", str(missing)], env)
        assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and str(missing) in r.stderr.decode()


def test_every_command_decodes_the_same_way():
    from localai.cli import user_input

    assert user_input.decode(BAD.read_bytes()) == DECODED
    assert "\ufffd" in DECODED and "café ok" in DECODED
