"""User bytes -> text, the same way for every command: UTF-8, invalid bytes replaced by
U+FFFD (as `bytes.decode("utf-8", "replace")`). Covers command-line arguments (which Python
decodes with surrogate escapes), piped stdin (also what `input()` reads) and `--file`. A
model is given text it can read, and no command fails on bytes it cannot decode.
"""
from __future__ import annotations

import os
import sys

from ..errors import LocalAIError

ENCODING, ERRORS = "utf-8", "replace"


def decode(data: bytes) -> str:
    """The one decoder of user bytes."""
    return data.decode(ENCODING, ERRORS)


def setup() -> None:
    """At start-up: arguments re-decoded with `decode`, stdin decoding the same way."""
    sys.argv = [decode(os.fsencode(a)) for a in sys.argv]
    if sys.stdin is not None and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(encoding=ENCODING, errors=ERRORS)


def read_stdin() -> str:
    """Everything piped on stdin ("" for a terminal or no stdin)."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    buf = getattr(sys.stdin, "buffer", None)
    return decode(buf.read()) if buf is not None else sys.stdin.read()


def read_file(path: str) -> str:
    """A file's text; an unreadable file is a `LocalAIError` naming it."""
    try:
        with open(path, "rb") as f:
            return decode(f.read())
    except OSError as exc:
        raise LocalAIError(f"cannot read {path}: {exc.strerror or exc}") from None
