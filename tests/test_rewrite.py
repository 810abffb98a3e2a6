"""`rewrite` on the real daemon and model (issue 11): the replacement holds neither the
model's preamble nor its explanation, and keeps the selection's line endings (CRLF stays
CRLF) and its trailing newline. The filter's shapes are in test_daemon_units.py."""
from __future__ import annotations

import pytest

from localai.client import Client
from test_daemon_support import shared_daemon

TEXT = "teh quick brwon fox jumps over teh lazy dog\r\nit was verry happy\r\n"


@pytest.fixture(scope="module")
def daemon(smollm2_path):
    return shared_daemon()


def test_rewrite_drops_the_preamble_and_keeps_crlf(daemon):
    with Client(daemon["path"], autostart=False) as c:
        # what SmolLM2 answers to this request: a preamble line first
        raw = c.call("chat", messages=[{"role": "system", "content": _system()},
                                       {"role": "user", "content": _user(TEXT.replace("\r\n", "\n"))}],
                     max_tokens=16, temperature=0)["text"]
        assert raw.lower().startswith("here"), raw
        done = c.call("rewrite", text=TEXT, instruction="fix the spelling", max_tokens=60, temperature=0)
    text = done["text"]
    assert text.strip() and not text.lower().startswith("here") and "This change" not in text, text
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", ""), repr(text)
    assert not text.endswith("\r\n\r\n")


def _system():
    from localai.daemon.handlers import REWRITE_SYSTEM

    return REWRITE_SYSTEM


def _user(text):
    return f"fix the spelling\n\n```\n{text}\n```"
