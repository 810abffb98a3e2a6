"""The config file: `$XDG_CONFIG_HOME/localai/config.toml` (else `~/.config/localai/config.toml`,
or `$LOCALAI_CONFIG`). Every key is optional; command-line flags and request parameters
override it.

    model = "smollm2"          # default model: catalog name or path to a .gguf
    backend = "auto"           # auto | numpy | mlx
    n_ctx = 4096               # context length (default: the model file's, capped at 8192)
    threads = 2                # CPU threads for the numpy backend's kernels, pinned (default: up to
                               # the physical cores, fewer while another program keeps a core busy)
    keep_alive = "10m"         # unload an idle model after this long ("30s", "1h", 0 = at once, -1 = never)
    system = "You are terse."  # system prompt for `localai ask` and `localai chat`
    http = "127.0.0.1:8080"    # also serve the HTTP API (OpenAI + llama-server endpoints) there;
                               # a non-loopback address needs LOCALAI_API_KEY (or --api-key)
    http_cors = ["http://localhost:3000"]   # origins allowed by CORS (default: none)

    [sampling]                 # defaults for generate, chat, rewrite (and ask/chat)
    temperature = 0.7
    top_k = 40
    top_p = 0.95
    min_p = 0.05
    repeat_penalty = 1.0
    repeat_last_n = 64
    max_tokens = 512
    seed = 42

    [prompt_cache]             # the daemon's pool of KV caches of recent prompts
    sessions = 8
    max_mb = 1024              # default: one full context or twice the model, at most 1/4 of free memory

Imports nothing heavy (tomllib is in the standard library).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from .errors import LocalAIError

DEFAULT_KEEP_ALIVE = 600.0
SAMPLING_KEYS = {
    "temperature": float, "top_k": int, "top_p": float, "min_p": float, "repeat_penalty": float,
    "repeat_last_n": int, "max_tokens": int, "seed": int,
}


class ConfigError(LocalAIError):
    code = "bad_config"


@dataclass
class Config:
    model: str | None = None
    backend: str = "auto"
    n_ctx: int | None = None
    threads: int | None = None  # None: the physical cores
    keep_alive: float = DEFAULT_KEEP_ALIVE  # seconds; < 0 = never unload
    system: str | None = None
    sampling: dict = field(default_factory=dict)
    cache_sessions: int = 8
    cache_bytes: int | None = None  # None: sized to the model and the machine (daemon.admission)
    http: str | None = None  # [HOST:]PORT of the HTTP API; None = no HTTP listener
    http_cors: list = field(default_factory=list)
    api_key: str | None = None  # from --api-key or $LOCALAI_API_KEY, never from the file
    path: str | None = None  # the file it came from, if any


def config_path() -> str:
    if os.environ.get("LOCALAI_CONFIG"):
        return os.environ["LOCALAI_CONFIG"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "localai", "config.toml")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value) -> float:
    """Seconds from 600, 600.0, "600", "30s", "10m", "1h", "-1" (never)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(unit) and s[: -len(unit)].strip().lstrip("-").replace(".", "", 1).isdigit():
            return float(s[: -len(unit)]) * _UNITS[unit]
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 1h, -1)") from None


def _expect(path: str, key: str, value, tp):
    ok = isinstance(value, tp) and not (isinstance(value, bool) and tp is not bool)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"{path}: `{key}` must be {tp.__name__}, not {value!r}")
    return value


MAX_N_CTX = 1 << 20


def _did_you_mean(key: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _line_of(path: str, exc) -> str:
    """`: <the offending line>` for a TOML error, so the message names the key."""
    import re

    m = re.search(r"at line (\d+)", str(exc))
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            line = f.read().splitlines()[int(m.group(1)) - 1].strip()
        return f": `{line[:80]}`" if line else ""
    except (OSError, IndexError, AttributeError):
        return ""


def load(path: str | None = None) -> Config:
    """Read the config file; a missing file gives the defaults, a bad one a ConfigError."""
    path = path or config_path()
    cfg = Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return cfg
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}{_line_of(path, exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    cfg.path = path
    known = {"model": str, "backend": str, "n_ctx": int, "threads": int, "keep_alive": None, "system": str,
             "sampling": dict, "prompt_cache": dict, "http": str, "http_cors": list}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key `{key}`{_did_you_mean(key, known)} (known: {', '.join(known)})")
        if known[key] is dict and not isinstance(value, dict):
            raise ConfigError(f"{path}: `{key}` must be a table (`[{key}]` followed by its keys), not {value!r}")
        if key == "keep_alive":
            try:
                cfg.keep_alive = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: `keep_alive`: {exc}") from None
        elif key == "sampling":
            for k, v in value.items():
                if k not in SAMPLING_KEYS:
                    raise ConfigError(f"{path}: unknown key `sampling.{k}`{_did_you_mean(k, SAMPLING_KEYS)} "
                                      f"(known: {', '.join(SAMPLING_KEYS)})")
                cfg.sampling[k] = _expect(path, f"sampling.{k}", v, SAMPLING_KEYS[k])
        elif key == "prompt_cache":
            for k, v in value.items():
                if k == "sessions":
                    cfg.cache_sessions = _expect(path, "prompt_cache.sessions", v, int)
                elif k == "max_mb":
                    cfg.cache_bytes = int(_expect(path, "prompt_cache.max_mb", v, float) * (1 << 20))
                else:
                    raise ConfigError(f"{path}: unknown key `prompt_cache.{k}`"
                                      f"{_did_you_mean(k, ('sessions', 'max_mb'))} (known: sessions, max_mb)")
        else:
            setattr(cfg, key, _expect(path, key, value, known[key]))
    if cfg.n_ctx is not None and not 1 <= cfg.n_ctx <= MAX_N_CTX:
        raise ConfigError(f"{path}: `n_ctx` must be between 1 and {MAX_N_CTX}, not {cfg.n_ctx}")
    if not all(isinstance(o, str) for o in cfg.http_cors):
        raise ConfigError(f"{path}: `http_cors` must be a list of origins (strings)")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"{path}: `threads` must be 1 or more, not {cfg.threads}")
    if cfg.backend not in ("auto", "numpy", "mlx"):
        raise ConfigError(f"{path}: `backend` must be auto, numpy or mlx, not {cfg.backend!r}")
    return cfg


def override(cfg: Config, **flags) -> Config:
    """Apply command-line flags (None = not given) over the file's values; the API key
    comes from --api-key, else $LOCALAI_API_KEY."""
    if cfg.api_key is None and os.environ.get("LOCALAI_API_KEY"):
        cfg.api_key = os.environ["LOCALAI_API_KEY"]
    for key, value in flags.items():
        if value is None:
            continue
        if key == "keep_alive":
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"--keep-alive: {exc}") from None
        if key == "threads" and value < 1:
            raise ConfigError(f"--threads must be 1 or more, not {value}")
        setattr(cfg, key, value)
    return cfg


def daemon_args(**flags) -> list:
    """The same flags as `python -m localai.daemon` arguments (for a background start)."""
    out = []
    for key, value in flags.items():
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out
