"""The history (localai.history) through a real daemon with the real model: every request and
answer is kept, `localai logs` shows and searches them, `localai chat --continue` resumes the
last conversation, and `log = false` in the config file keeps nothing."""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid

import pytest

from test_daemon_support import run_cli, shared_daemon


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def _logs(env, *args, want=1) -> list:
    """`localai logs --json ...`, polled briefly: the daemon writes the history on its own thread."""
    deadline = time.monotonic() + 5
    while True:
        r = run_cli(["logs", "--json", *args], env)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_ask_and_complete_are_kept_and_logs_finds_them(env, tmp_path):
    tag = uuid.uuid4().hex[:8]
    q = f"Repeat the word {tag}."
    r = run_cli(["ask", "-t", "0", "-n", "12", q], env)
    assert r.returncode == 0, r.stderr
    rows = _logs(env, "-q", tag)
    assert len(rows) == 1
    row = rows[0]
    assert row["method"] == "chat" and row["model"] == "smollm2" and row["prompt"] == q
    assert r.stdout == row["answer"] + ("" if row["answer"].endswith("\n") else "\n")
    assert row["params"]["messages"][-1] == {"role": "user", "content": q}
    assert row["timings"]["predicted_n"] >= 1 and row["timings"]["prompt_n"] >= 1
    assert row["finish_reason"] in ("stop", "eos", "length") and abs(row["time"] - time.time()) < 120

    r = run_cli(["complete", "--prefix", f"# {tag}\ndef add(a, b):\n    return", "-n", "6", "--json"], env)
    assert r.returncode == 0, r.stderr
    rows = _logs(env, "-q", tag, want=2)
    assert [x["method"] for x in rows] == ["chat", "complete"]
    assert rows[1]["answer"] == json.loads(r.stdout)["text"] and "<CURSOR>" in rows[1]["prompt"]

    # the text form: a header per request, then the prompt and the answer
    r = run_cli(["logs", "-n", "1", "-q", tag], env)
    assert r.returncode == 0 and r.stdout.startswith("# ") and " complete " in r.stdout.splitlines()[0]
    assert "## prompt" in r.stdout and "## answer" in r.stdout and "def add(a, b):" in r.stdout
    r = run_cli(["logs", "-q", "no such text " + tag], env)
    assert r.returncode == 0 and "no requests in the history" in r.stdout


def test_chat_continue_resumes_the_last_conversation(env):
    tag = uuid.uuid4().hex[:8]
    first = f"My name is {tag}."
    r = run_cli(["chat", "-t", "0", "-n", "8"], env, input=first + "\n")
    assert r.returncode == 0, r.stderr
    answer = _logs(env, "-q", tag)[0]["answer"]
    r = run_cli(["chat", "--continue", "-t", "0", "-n", "8"], env, input="What is my name?\n")
    assert r.returncode == 0, r.stderr
    assert "continuing the conversation of" in r.stdout and "2 messages" in r.stdout
    rows = _logs(env, "-q", "What is my name?")
    assert rows[-1]["params"]["messages"] == [{"role": "user", "content": first},
                                              {"role": "assistant", "content": answer},
                                              {"role": "user", "content": "What is my name?"}]


def test_log_false_keeps_nothing(env, tmp_path):
    conf = tmp_path / "config" / "localai"
    conf.mkdir(parents=True)
    (conf / "config.toml").write_text("log = false\n")
    data = tmp_path / "data"
    denv = dict(env, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(data),
                LOCALAI_SOCKET=str(tmp_path / "run" / "localai.sock"))
    try:
        r = run_cli(["ask", "-t", "0", "-n", "4", "Say yes."], denv, timeout=120)  # starts its own daemon
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip()
    finally:
        run_cli(["stop"], denv)
    assert not os.path.exists(data / "localai" / "history.db")
    r = run_cli(["logs"], denv)
    assert r.returncode == 0 and "no requests in the history" in r.stdout


def test_the_history_file_is_the_users_alone(env):
    run_cli(["ask", "-t", "0", "-n", "2", "Hi"], env)
    path = os.path.join(os.environ["XDG_DATA_HOME"], "localai", "history.db")
    _logs(env)
    assert os.stat(path).st_mode & 0o077 == 0
    with sqlite3.connect(path) as db:  # a plain SQLite file anyone can query
        assert db.execute("SELECT count(*) FROM requests").fetchone()[0] >= 1
