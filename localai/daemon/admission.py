"""Memory admission: before the daemon loads a model it checks that the weights and one full
context's KV cache fit in the memory this process may still use, and sizes the prompt
cache's budget to the model and the machine.

    available_bytes() -> (bytes, where)       MemAvailable, capped by the cgroup's limit
    admit(path, n_ctx, cache_bytes) -> Admission(n_ctx, cache_bytes, need, available)

KV cache bytes per token = n_layers x 2 (K and V) x n_kv_heads x head_dim x 4 (float32), as
localai.models.cache stores it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import LocalAIError

log = logging.getLogger("localai.daemon")

DEFAULT_N_CTX = 8192       # as localai.engine: the file's trained context, capped here
KV_ITEM_BYTES = 4          # float32 keys and values


class InsufficientMemory(LocalAIError):
    code = "out_of_memory"


@dataclass
class Admission:
    n_ctx: int
    cache_bytes: int      # the prompt cache's budget
    need: int             # weights + one full context's KV cache, bytes
    available: int | None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            s = f.read().strip()
        return None if s in ("max", "") else int(s)
    except (OSError, ValueError):
        return None


def available_bytes() -> tuple[int | None, str]:
    """Bytes this process can still allocate without swapping or an OOM kill: the kernel's
    MemAvailable, and no more than the cgroup's limit minus its usage (v2, else v1)."""
    avail, where = None, "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail, where = int(line.split()[1]) * 1024, "MemAvailable"
    except OSError:
        pass
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and usage is not None and limit < (1 << 60):
            room = max(0, limit - usage)
            if avail is None or room < avail:
                avail, where = room, "the cgroup's memory limit"
            break
    if avail is None and hasattr(os, "sysconf"):  # macOS and others: free physical pages
        try:
            avail, where = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free memory"
        except (ValueError, OSError):
            pass
    return avail, where


def kv_bytes_per_token(g) -> int:
    a = g.arch_get
    d, H = int(a("embedding_length", 0) or 0), int(a("attention.head_count", 1) or 1)
    hd_k = int(a("attention.key_length", d // max(H, 1)) or 0)
    hd_v = int(a("attention.value_length", hd_k) or 0)
    return int(a("block_count", 0) or 0) * int(a("attention.head_count_kv", H) or H) * (hd_k + hd_v) * KV_ITEM_BYTES


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def admit(path: str, n_ctx: int | None, cache_bytes: int | None) -> Admission:
    """Check that `path` with `n_ctx` fits (InsufficientMemory naming the figures if not);
    warn beyond the trained context; size the prompt cache (cache_bytes None: one full
    context or twice the weights, whichever is larger, at most a quarter of what is free)."""
    from ..gguf_file import GGUFFile

    g = GGUFFile(path)
    weights = os.path.getsize(path)
    per_token = kv_bytes_per_token(g)
    train = int(g.arch_get("context_length", 2048) or 2048)
    n = int(n_ctx) if n_ctx else min(train, DEFAULT_N_CTX)
    if n > train:
        log.warning("n_ctx %d is beyond %s's trained context of %d tokens: answers past it may be poor",
                    n, os.path.basename(path), train)
    context = per_token * n
    need = weights + context
    avail, where = available_bytes()
    if avail is not None and need > avail:
        raise InsufficientMemory(
            f"{os.path.basename(path)} with n_ctx {n:,} needs {_mb(need)} ({_mb(weights)} of weights + "
            f"{_mb(context)} of KV cache, {per_token:,} bytes per token) but {_mb(avail)} is available "
            f"({where}): use a smaller n_ctx (at most about {max(0, (avail - weights) // max(per_token, 1)):,})")
    if cache_bytes is None:
        cache_bytes = max(context, 2 * weights)
        if avail is not None:
            cache_bytes = min(cache_bytes, max(0, avail - need) // 4)
    return Admission(n, int(cache_bytes), need, avail)
