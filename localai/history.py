"""History: every generating request the daemon answers, kept in a SQLite database.

    $XDG_DATA_HOME/localai/history.db     (else ~/.local/share/localai/history.db)

One row per request (`chat`, `generate`, `complete`, `rewrite`, `action`): when it finished,
the method (and the action's name), the model, the prompt as a person reads it, the full
request parameters (JSON), the answer, why it ended and the timings. The daemon writes
(`Recorder`, on a thread of its own, so the scheduler never waits on the disk); `localai logs`
and `localai chat --continue` read (`query`, `last_conversation`). `log = false` in the
config file turns recording off. The file is the user's alone (0600, in a 0700 directory).

Standard library only (sqlite3): the CLI's `logs` command stays light.
"""
from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,          -- when the answer ended, Unix seconds
    method TEXT NOT NULL,        -- chat | generate | complete | rewrite | action
    action TEXT,                 -- the action's name (method `action`)
    model TEXT,
    prompt TEXT NOT NULL,        -- what was asked, as text (see prompt_text)
    params TEXT NOT NULL,        -- the request's parameters, JSON
    answer TEXT NOT NULL,
    finish_reason TEXT,          -- stop | eos | length | time | cancelled | error
    timings TEXT                 -- JSON: prompt_n, prompt_ms, predicted_n, predicted_ms, ttft_ms, ...
);
CREATE INDEX IF NOT EXISTS requests_time ON requests(time);
"""


def db_path() -> str:
    """`$XDG_DATA_HOME/localai/history.db` (else `~/.local/share/localai/history.db`)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "localai", "history.db")


def connect(path: str | None = None, create: bool = True) -> sqlite3.Connection | None:
    """The database (created 0600 with its table); None when `create` is false and it does not exist."""
    path = path or db_path()
    if not os.path.exists(path):
        if not create:
            return None
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    db = sqlite3.connect(path, timeout=5.0)
    db.executescript(SCHEMA)
    return db


def prompt_text(method: str, params: dict) -> str:
    """The request as a person reads it: the last user message (chat), the prompt (generate),
    the instruction and text (rewrite), prefix<CURSOR>suffix (complete), the action's text."""
    if method == "chat":
        users = [m.get("content", "") for m in params.get("messages") or [] if m.get("role") == "user"]
        return users[-1] if users else ""
    if method == "generate":
        return params.get("prompt") or ""
    if method == "rewrite":
        return f"{params.get('instruction', '')}\n\n{params.get('text', '')}"
    if method == "complete":
        return f"{params.get('prefix', '')}<CURSOR>{params.get('suffix') or ''}"
    if method == "action":
        ctx = params.get("context") or {}
        return ctx.get("text") or ctx.get("stdin") or ""
    return ""


def _params_dict(params) -> dict:
    if isinstance(params, dict):
        return params
    from dataclasses import asdict

    return {k: v for k, v in asdict(params).items() if v is not None}


class Recorder:
    """Writes finished requests on a thread of its own. `record` never blocks and never raises."""

    def __init__(self, path: str | None = None):
        self.path = path or db_path()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="localai-history", daemon=True)
        self.thread.start()

    def record(self, method: str, params, event) -> None:
        """A request (`method`, its params) and its last event (Done or Error)."""
        self.queue.put((time.time(), method, params, event))

    def close(self, timeout: float = 2.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout)

    def _loop(self) -> None:
        import logging

        log = logging.getLogger("localai.daemon")
        db = None
        while True:
            item = self.queue.get()
            if item is None:
                break
            try:
                if db is None:
                    db = connect(self.path)
                db.execute("INSERT INTO requests (time, method, action, model, prompt, params, answer, "
                           "finish_reason, timings) VALUES (?,?,?,?,?,?,?,?,?)", _row(*item))
                db.commit()
            except Exception as exc:  # a full disk or a locked file costs the history, not the answer
                log.warning("could not write the history to %s: %s", self.path, exc)
                db = None
        if db is not None:
            db.close()


def _row(t: float, method: str, params, event) -> tuple:
    p = _params_dict(params)
    if getattr(event, "event", "") == "error":
        answer, reason, timings, model = event.message, "error", None, p.get("model")
    else:
        answer, reason, model = event.text or "", event.finish_reason, event.model or p.get("model")
        timings = json.dumps(event.timings) if event.timings else None
    prompt = prompt_text(method, p) or _built_prompt(params)
    return (t, method, p.get("name") if method == "action" else None, model, prompt,
            json.dumps(p, ensure_ascii=False, default=str), answer, reason, timings)


def _built_prompt(params) -> str:
    """An action whose prompt the daemon built from what it computed (commit-message: the
    staged diff): the last user message of that prompt."""
    run = getattr(params, "bound", None)
    users = [m.get("content", "") for m in getattr(run, "messages", None) or [] if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else ""


# --- reading ---------------------------------------------------------------------------------

COLUMNS = ("id", "time", "method", "action", "model", "prompt", "params", "answer", "finish_reason", "timings")


def query(n: int | None = 3, text: str | None = None, path: str | None = None) -> list[dict]:
    """The last `n` requests (all when None), oldest first; `text`: only those whose prompt or
    answer contains it (case-insensitive for ASCII)."""
    db = connect(path, create=False)
    if db is None:
        return []
    try:
        sql, args = f"SELECT {', '.join(COLUMNS)} FROM requests", []
        if text:
            sql += " WHERE instr(lower(prompt), lower(?)) OR instr(lower(answer), lower(?))"
            args += [text, text]
        sql += " ORDER BY id DESC"
        if n is not None:
            sql += " LIMIT ?"
            args.append(n)
        rows = [dict(zip(COLUMNS, r)) for r in db.execute(sql, args)]
    finally:
        db.close()
    for r in rows:
        r["params"] = json.loads(r["params"])
        r["timings"] = json.loads(r["timings"]) if r["timings"] else None
    return rows[::-1]


def last_conversation(path: str | None = None) -> tuple[list, dict] | None:
    """The messages of the last `chat` request with its answer appended, and that row; None
    when there is none."""
    db = connect(path, create=False)
    if db is None:
        return None
    try:
        r = db.execute(f"SELECT {', '.join(COLUMNS)} FROM requests WHERE method = 'chat' "
                       "AND finish_reason != 'error' ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    if r is None:
        return None
    row = dict(zip(COLUMNS, r))
    messages = list(json.loads(row["params"]).get("messages") or [])
    if row["answer"]:
        messages.append({"role": "assistant", "content": row["answer"]})
    return messages, row
