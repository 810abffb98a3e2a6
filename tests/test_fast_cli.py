"""The instant client path (localai.cli.fast): `ask`, `complete` and `run` parsed by hand,
sent with the light client, never importing Typer -- and giving the same output, errors and
exit codes as the same commands through the Typer app (real daemon, real model). Plus
Ctrl-C: status 130 and nothing printed after it, for every such command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from localai.cli import fast
from test_daemon_support import run_cli, shared_daemon

TYPER = "import localai.cli as c; c._fast_path = lambda argv: None; c.main()"  # the same main, no fast path


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def _typer(args, env, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TYPER, *args], env=env, input=input, capture_output=True,
                          text=True, timeout=60, stdin=None if input is not None else subprocess.DEVNULL)


def _imported(stderr: str) -> set:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_the_parser_takes_what_typer_takes_and_leaves_it_the_rest():
    assert fast.parse(["ask", "-t", "0", "what", "is", "--max-tokens=5", "it"]) == \
        ("ask", {"temperature": 0.0, "max_tokens": 5, "question": ["what", "is", "it"]})
    assert fast.parse(["ask", "--", "-n", "3"]) == ("ask", {"question": ["-n", "3"]})
    assert fast.parse(["complete", "--file", "a.py", "--line", "3", "--json"]) == \
        ("complete", {"file": "a.py", "line": 3, "json_out": True})
    assert fast.parse(["run", "fix", "-m", "smollm2", "some", "text"]) == \
        ("run_action", {"model": "smollm2", "name": "fix", "text": ["some", "text"]})
    for argv in (["ask", "-h"], ["ask", "--help"], ["ask", "-n5", "hi"], ["ask", "-n", "five", "hi"],
                 ["ask", "--json=1"], ["ask", "-n"], ["complete", "stray"], ["run"], ["ask", "--bogus"],
                 ["chat"], ["status"], []):
        assert fast.parse(argv) is None, argv


def test_ask_and_complete_import_no_typer(env):
    for args in (["ask", "-n", "1", "Hi"], ["complete", "--prefix", "def f(", "-n", "1"]):
        r = run_cli(args, dict(env, PYTHONPROFILEIMPORTTIME="1"))
        assert r.returncode == 0, r.stderr
        imported = _imported(r.stderr)
        assert "localai.client" in imported and "localai.cli.fast" in imported
        assert not {"typer", "click", "rich", "numpy", "localai.engine", "localai.store"} & imported
    r = run_cli(["ask", "--help"], dict(env, PYTHONPROFILEIMPORTTIME="1"))  # help: Typer's
    assert r.returncode == 0 and "typer" in _imported(r.stderr) and "--max-tokens" in r.stdout


CASES = [
    (["ask", "-t", "0", "-n", "8", "What is the capital of France?"], None),
    (["ask", "--no-stream", "-t", "0", "-n", "6", "Repeat this:"], "The sky is blue.\n"),
    (["ask", "-s", "You answer in one word.", "-t", "0", "-n", "4", "Name a fruit."], None),
    (["complete", "--prefix", "def add(a, b):\n    return", "-n", "6"], None),
    (["ask"], None),                                        # nothing to ask
    (["ask", "-m", "no-such-model", "Hi"], None),           # unknown model
    (["ask", "-n", "many", "Hi"], None),                    # a bad value: Typer's message either way
    (["complete", "--file", "/no/such/file.py"], None),
]


@pytest.mark.parametrize("args,stdin", CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_the_instant_path_answers_as_the_typer_app_does(env, args, stdin):
    fast_r, typer_r = run_cli(args, env, input=stdin), _typer(args, env, input=stdin)
    prog = fast_r.stderr.replace("python -m localai ", "-c ")  # Click names the program as it was started
    assert (fast_r.returncode, fast_r.stdout, prog) == (typer_r.returncode, typer_r.stdout, typer_r.stderr)
    assert "Traceback" not in fast_r.stderr


def test_json_output_is_the_same(env):
    args = ["complete", "--prefix", "for i in range(", "-n", "4", "--json"]
    a, b = json.loads(run_cli(args, env).stdout), json.loads(_typer(args, env).stdout)
    assert (a["text"], a["finish_reason"], a["model"]) == (b["text"], b["finish_reason"], b["model"])


@pytest.mark.parametrize("args", [["ask", "-n", "400", "Write a very long story about a dragon."],
                                  ["complete", "--prefix", "Once upon a time", "-n", "400", "-t", "0.8"]],
                         ids=["ask", "complete"])
def test_ctrl_c_stops_with_130_and_prints_nothing_after_it(env, args):
    proc = subprocess.Popen([sys.executable, "-m", "localai", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(8)  # the answer streams
    assert first, proc.stderr.read()
    os.kill(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == b""  # no "Aborted!", no traceback, no note
    out = (first + rest).decode()
    assert out.endswith("\n")  # the line is ended, so the shell's prompt starts on its own


@pytest.mark.parametrize("fast_path", [True, False], ids=["instant", "typer"])
def test_a_reader_that_goes_away_ends_it_quietly(env, fast_path):
    args = ["ask", "-n", "200", "Write a very long story about a dragon."]
    argv = [sys.executable, "-m", "localai", *args] if fast_path else [sys.executable, "-c", TYPER, *args]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1)  # `| head -c 1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1 and b"Traceback" not in err and err == b"", err
