"""`python -m localai.daemon [--socket PATH] [--model M] [--backend B] [--n-ctx N] [--threads N] [--keep-alive T]
[--http [HOST:]PORT] [--api-key KEY]`:
the daemon in the foreground (what `localai serve` and the client's auto-start run)."""
from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import LocalAIError
from . import serve


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localai.daemon")
    ap.add_argument("--socket")
    ap.add_argument("--model")
    ap.add_argument("--backend")
    ap.add_argument("--n-ctx", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--keep-alive")
    ap.add_argument("--http", help="[HOST:]PORT: also serve the HTTP API there")
    ap.add_argument("--api-key", help="key the HTTP API requires (default: $LOCALAI_API_KEY)")
    ap.add_argument("--draft-model", help="model that drafts for requests with draft \"model\"")
    ap.add_argument("--max-batch", type=int, help="requests per forward pass (1 = no batching)")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    try:
        cfg = config.load()
        config.override(cfg, model=a.model, backend=a.backend, n_ctx=a.n_ctx, threads=a.threads, keep_alive=a.keep_alive,
                        http=a.http, api_key=a.api_key, draft_model=a.draft_model,
                        max_batch=a.max_batch)
        serve(cfg, a.socket, log_level=a.log_level)
    except LocalAIError as exc:
        print(f"localai: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
