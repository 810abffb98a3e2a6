"""Memory admission: before the daemon loads a model it checks that the weights and one full
context's KV cache fit in the memory this process may still use, and sizes the prompt
cache's budget to the model and the machine.

    available_bytes() -> (bytes, where)       MemAvailable, capped by the cgroup's limit
    cgroup_room() -> bytes | None              least (limit - usage) over our cgroup and its ancestors
    admit(path, n_ctx, cache_bytes, backend) -> Admission(n_ctx, cache_bytes, need, available)

KV cache bytes per token = n_layers x 2 (K and V) x n_kv_heads x head_dim x item bytes: 2 on
the numpy backend (float16, localai.models.cache), 4 on MLX (float32, localai.mlx.cache).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import LocalAIError

log = logging.getLogger("localai.daemon")

DEFAULT_N_CTX = 8192       # as localai.engine: the file's trained context, capped here
KV_ITEM_BYTES = {"numpy": 2, "mlx": 4}  # bytes per key or value element, per backend


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


CGROUP_FILES = {"cgroup2": ("memory.max", "memory.current"),
                "cgroup": ("memory.limit_in_bytes", "memory.usage_in_bytes")}


def cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list[tuple[str, str]]:
    """(directory, kind) of this process's memory cgroup and each ancestor up to the mount,
    innermost first; kind "cgroup2" (unified) or "cgroup" (v1 memory controller).

    `proc_cgroup` is /proc/self/cgroup ("0::/user.slice/..." for v2, "4:memory:/..." for v1),
    `mountinfo` /proc/self/mountinfo (field 4 the mount's root inside the hierarchy, field 5
    where it is mounted, the type after " - "). Reading the cgroup's own directory, not the
    mount's top, is what finds a limit set by `systemd-run -p MemoryMax=` or a container
    without its own cgroup namespace."""
    own = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            own["cgroup2"] = parts[2]
        elif "memory" in parts[1].split(","):
            own["cgroup"] = parts[2]
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3:
            continue
        kind = r[0]
        if kind not in own or (kind == "cgroup" and "memory" not in r[2].split(",")):
            continue
        root, point, path = f[3], f[4].replace("\\040", " "), own[kind]
        if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
            continue  # our cgroup is not below this mount
        rel = path[len(root):] if root != "/" else path
        d = os.path.normpath(point + "/" + rel.strip("/"))
        while True:
            out.append((d, kind))
            if d == os.path.normpath(point) or len(d) <= len(point):
                break
            d = os.path.dirname(d)
        own.pop(kind)
    return out


def cgroup_room() -> int | None:
    """The least (limit - usage) over this process's memory cgroup and its ancestors, bytes;
    None when no limit is set (or cgroups are not there)."""
    try:
        with open("/proc/self/cgroup") as f:
            pc = f.read()
        with open("/proc/self/mountinfo") as f:
            mi = f.read()
        dirs = cgroup_dirs(pc, mi)
    except OSError:
        return None
    room = None
    for d, kind in dirs:
        limit_f, usage_f = CGROUP_FILES[kind]
        limit, usage = _read_int(os.path.join(d, limit_f)), _read_int(os.path.join(d, usage_f))
        if limit is not None and usage is not None and limit < (1 << 60):
            r = max(0, limit - usage)
            room = r if room is None else min(room, r)
    return room


def available_bytes() -> tuple[int | None, str]:
    """Bytes this process can still allocate without swapping or an OOM kill: the kernel's
    MemAvailable, and no more than its memory cgroup's (or an ancestor's) limit minus usage."""
    avail, where = None, "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail, where = int(line.split()[1]) * 1024, "MemAvailable"
    except OSError:
        pass
    room = cgroup_room()
    if room is not None and (avail is None or room < avail):
        avail, where = room, "the cgroup's memory limit"
    if avail is None and hasattr(os, "sysconf"):  # macOS and others: free physical pages
        try:
            avail, where = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free memory"
        except (ValueError, OSError):
            pass
    return avail, where


def _kv_item_bytes(backend: str | None) -> int:
    """KV_ITEM_BYTES of the backend that `backend` ("auto", None, or a name) will load."""
    if backend in (None, "auto"):  # as engine.resolve_backend, without importing MLX
        import platform
        import sys

        backend = "mlx" if sys.platform == "darwin" and platform.machine() == "arm64" else "numpy"
    return KV_ITEM_BYTES.get(backend, max(KV_ITEM_BYTES.values()))


def kv_bytes_per_token(g, backend: str | None = "numpy") -> int:
    """KV cache bytes per position of GGUF file `g` on `backend`."""
    a = g.arch_get
    d, H = int(a("embedding_length", 0) or 0), int(a("attention.head_count", 1) or 1)
    hd_k = int(a("attention.key_length", d // max(H, 1)) or 0)
    hd_v = int(a("attention.value_length", hd_k) or 0)
    return int(a("block_count", 0) or 0) * int(a("attention.head_count_kv", H) or H) * (hd_k + hd_v) * _kv_item_bytes(backend)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def admit(path: str, n_ctx: int | None, cache_bytes: int | None, backend: str | None = "auto") -> Admission:
    """Check that `path` with `n_ctx` fits (InsufficientMemory naming the figures if not);
    warn beyond the trained context; size the prompt cache (cache_bytes None: one full
    context or twice the weights, whichever is larger, at most a quarter of what is free)."""
    from ..gguf_file import GGUFFile

    g = GGUFFile(path)
    weights = os.path.getsize(path)
    per_token = kv_bytes_per_token(g, backend)
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
