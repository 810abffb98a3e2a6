"""`localai logs`: the requests and answers the daemon kept (localai.history)."""
from __future__ import annotations

import json
import time
from typing import Optional

import typer

from .. import history


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _summary(r: dict) -> str:
    what = f"{r['method']} {r['action']}" if r["action"] else r["method"]
    t = r["timings"] or {}
    parts = [p for p in (r["model"], r["finish_reason"]) if p]
    if t.get("predicted_n") is not None:
        parts.append(f"{t['predicted_n']} tokens")
    ms = (t.get("prompt_ms") or 0) + (t.get("predicted_ms") or 0)
    if ms:
        parts.append(f"{ms:.0f} ms")
    return f"# {_when(r['time'])}  {what}  ({', '.join(parts)})"


def logs(
    count: int = typer.Option(3, "--count", "-n", metavar="N", help="How many of the latest requests (0 = all)."),
    query: Optional[str] = typer.Option(None, "--query", "-q", metavar="TEXT",
                                        help="Only requests whose prompt or answer contains this text."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of the requests, every field."),
):
    """Show the latest requests and answers the daemon kept (`log = false` in the config keeps none)."""
    rows = history.query(count or None, query)
    if json_out:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        print(f"no requests in the history ({history.db_path()})" + (f" matching {query!r}" if query else ""))
        return
    for i, r in enumerate(rows):
        if i:
            print()
        print(_summary(r))
        print(f"\n## prompt\n\n{r['prompt'].rstrip()}\n\n## answer\n\n{r['answer'].rstrip()}")


COMMANDS = {"logs": logs}
