"""`localai chat` through a real pseudo-terminal (pexpect) against the test daemon: two turns
(the second uses the first's history and a multi-line block), Ctrl-C stops a reply but not the
program, /save, /reset, Ctrl-D exits."""
from __future__ import annotations

import json
import sys

import pexpect
import pytest

from test_daemon_support import greedy_chat, local_llm, shared_daemon

PROMPT = ">>> "


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def test_chat_in_a_terminal(env, tmp_path):
    c = pexpect.spawn(sys.executable, ["-m", "localai", "chat", "-t", "0", "-n", "200"], env=env,
                      encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        c.expect_exact(PROMPT)
        q1 = "What is 2+2?"
        c.sendline(q1)
        a1 = greedy_chat([{"role": "user", "content": q1}], 200)
        c.expect_exact(a1.replace("\n", "\r\n"))
        c.expect_exact(PROMPT)

        c.sendline('"""')  # a multi-line message
        c.expect_exact("... ")
        c.sendline("Now add 3")
        c.sendline('to that."""')
        c.expect_exact(PROMPT)

        c.sendline("Write a very long story about a dragon who learns to read.")
        c.expect_exact("learns to read.\r\n")  # the terminal's echo of the line
        c.expect(r"\w+ \w+ \w+")  # the reply is streaming
        c.sendcontrol("c")
        c.expect_exact("(stopped)")
        c.expect_exact(PROMPT)

        saved = tmp_path / "chat.json"
        c.sendline(f"/save {saved}")
        c.expect_exact("(saved 6 messages")
        c.expect_exact(PROMPT)
        c.sendline("/reset")
        c.expect_exact("(history cleared)")
        c.expect_exact(PROMPT)
        c.sendeof()
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0

    history = json.loads(saved.read_text())
    assert [m["role"] for m in history] == ["user", "assistant"] * 3
    assert history[1]["content"] == a1
    assert history[2]["content"] == "Now add 3\nto that."
    assert history[3]["content"] == greedy_chat(history[:3], 200)  # the second turn saw the first
    assert 0 < len(local_llm().tokenize(history[5]["content"])) < 100  # stopped long before 200 tokens
