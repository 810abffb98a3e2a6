"""The config file: `$XDG_CONFIG_HOME/localai/config.toml` (else `~/.config/localai/config.toml`,
or `$LOCALAI_CONFIG`). Every key is optional; command-line flags and request parameters
override it.

    model = "smollm2"          # default model: catalog name or path to a .gguf
    backend = "auto"           # auto | numpy | mlx
    n_ctx = 4096               # context length (default: the model file's, capped at 8192)
    threads = 2                # CPU threads for the numpy backend's kernels, pinned (default: up to
                               # the physical cores, fewer while another program keeps a core busy)
    activation_bits = "auto"   # activations' width in the integer products: 8 (as llama.cpp; faster
                               # prefill and decode, slightly less exact: it can change a small
                               # model's answer) or 16; "auto" (the default): 8 for models of 1B
                               # parameters or more, 16 below; only x86 CPUs with AVX2 and no AVX-512
                               # have 8-bit kernels (elsewhere 16); $LOCALAI_ACTIVATION_BITS overrides it
    keep_alive = "10m"         # unload an idle model after this long ("30s", "1h", 0 = at once, -1 = never)
    system = "You are terse."  # system prompt for `localai ask` and `localai chat`
    draft_model = "smollm2"    # a small model of the same family drafting for speculative decoding
                               # (requests with `draft: "model"`)
    max_batch = 32             # requests that share one forward pass (continuous batching);
                               # 1 = none: every request's passes run alone
    http = "127.0.0.1:8080"    # also serve the HTTP API (OpenAI + llama-server endpoints) there;
                               # a non-loopback address needs LOCALAI_API_KEY (or --api-key)
    http_cors = ["http://localhost:3000"]   # origins allowed by CORS (default: none)
    actions_path = ["~/src/my-actions"]     # more action files or folders of them, besides
                               # $XDG_CONFIG_HOME/localai/actions/ (docs/actions.md)
    log = true                 # keep every request and answer in the history (`localai logs`); false: none

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

    [remotes.gpu]              # a remote engine (docs/remote.md): model "gpu/MODEL" runs there
    url = "http://gpu-box:8000/v1"        # or a list of servers: ["http://a:8000/v1", "http://b:8000/v1"]
    api_key_env = "GPU_API_KEY"           # the environment variable holding the key (never the key)
    models = { coder = "Qwen/Qwen2.5-Coder-7B" }   # aliases: model "coder" runs there too
    fim = "tokens"             # complete: infill (llama-server /infill) | tokens (FIM prompt to
                               # /v1/completions, as vLLM needs) | none (the prefix alone)
    fim_template = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"  # for fim = "tokens"
    timeout = "60s"            # no answer (or no next token) within this long: an error

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
    activation_bits: int | str | None = None  # 8 | 16 | "auto"; None: $LOCALAI_ACTIVATION_BITS, else "auto" (ops.numpy)
    keep_alive: float = DEFAULT_KEEP_ALIVE  # seconds; < 0 = never unload
    system: str | None = None
    draft_model: str | None = None  # for requests with draft "model" (localai/speculative.py)
    max_batch: int | None = None  # requests per forward pass; None: localai.batch.MAX_ROWS, 1: no batching
    sampling: dict = field(default_factory=dict)
    cache_sessions: int = 8
    cache_bytes: int | None = None  # None: sized to the model and the machine (daemon.admission)
    http: str | None = None  # [HOST:]PORT of the HTTP API; None = no HTTP listener
    http_cors: list = field(default_factory=list)
    actions_path: list = field(default_factory=list)  # action files or folders besides the user's actions dir
    log: bool = True  # the daemon records requests in the history (localai.history)
    api_key: str | None = None  # from --api-key or $LOCALAI_API_KEY, never from the file
    path: str | None = None  # the file it came from, if any
    remotes: dict = field(default_factory=dict)  # name -> Remote


FIM_MODES = ("infill", "tokens", "none")
DEFAULT_REMOTE_TIMEOUT = 60.0


@dataclass
class Remote:
    """One `[remotes.NAME]` table: an OpenAI-compatible engine (vLLM, llama-server, Ollama,
    another localai) that models named `NAME/MODEL`, or one of `models`' aliases, run on."""
    name: str
    urls: list                # base URLs, each ending in /v1 (as OpenAI clients take them)
    api_key_env: str | None = None
    models: dict = field(default_factory=dict)  # alias -> the remote's model id
    fim: str = "none"         # one of FIM_MODES
    fim_template: str | None = None  # "{prefix}" and "{suffix}" around the model's FIM tokens
    timeout: float = DEFAULT_REMOTE_TIMEOUT   # seconds

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


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


def activation_bits_of(text: str) -> int | str:
    """8, 16 or "auto" from its text ($LOCALAI_ACTIVATION_BITS, a flag); ValueError "must be 8,
    16 or auto, not ..." for anything else."""
    if text not in ("8", "16", "auto"):
        raise ValueError(f"must be 8, 16 or auto, not {text!r}")
    return text if text == "auto" else int(text)


def load(path: str | None = None) -> Config:
    """Read the config file; a missing file gives the defaults, a bad one a ConfigError. The
    environment then overrides it: $LOCALAI_ACTIVATION_BITS (8, 16 or auto; anything else is a
    ConfigError, so a daemon never starts with it)."""
    cfg = _read(path or config_path())
    env = os.environ.get("LOCALAI_ACTIVATION_BITS")
    if env is not None:
        try:
            cfg.activation_bits = activation_bits_of(env)
        except ValueError as exc:
            raise ConfigError(f"LOCALAI_ACTIVATION_BITS {exc}") from None
    return cfg


def _read(path: str) -> Config:
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
    cfg.remotes = _remotes(path, data.pop("remotes", {}))

    cfg.path = path
    known = {"model": str, "backend": str, "n_ctx": int, "threads": int, "keep_alive": None, "system": str,
             "draft_model": str, "sampling": dict, "prompt_cache": dict, "http": str, "http_cors": list,
             "actions_path": list, "log": bool, "max_batch": int, "activation_bits": None}
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
        elif key == "activation_bits":
            if isinstance(value, bool) or value not in (8, 16, "auto"):
                shown = str(value).lower() if isinstance(value, bool) else repr(value)  # as TOML spells it
                raise ConfigError(f'{path}: `activation_bits` must be 8, 16 or "auto", not {shown}')
            cfg.activation_bits = value if value == "auto" else int(value)
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
    if not all(isinstance(p, str) for p in cfg.actions_path):
        raise ConfigError(f"{path}: `actions_path` must be a list of files or folders (strings)")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"{path}: `threads` must be 1 or more, not {cfg.threads}")
    if cfg.max_batch is not None and cfg.max_batch < 1:
        raise ConfigError(f"{path}: `max_batch` must be 1 or more (1 = no batching), not {cfg.max_batch}")
    if cfg.backend not in ("auto", "numpy", "mlx"):
        raise ConfigError(f"{path}: `backend` must be auto, numpy or mlx, not {cfg.backend!r}")
    return cfg


REMOTE_KEYS = ("url", "api_key_env", "models", "fim", "fim_template", "timeout")


def _remotes(path: str, tables) -> dict:
    """`[remotes.NAME]` tables -> {NAME: Remote}; an alias may name one remote's model only."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: `remotes` must be tables (`[remotes.NAME]` followed by its keys), not {tables!r}")
    out, aliases = {}, {}
    for name, table in tables.items():
        r = out[name] = _remote(path, name, table)
        for alias in r.models:
            if alias in aliases:
                raise ConfigError(f"{path}: model alias `{alias}` is in both [remotes.{aliases[alias]}] and "
                                  f"[remotes.{r.name}]: keep one")
            aliases[alias] = r.name
    return out


def _remote(path: str, name: str, table) -> Remote:
    """One `[remotes.NAME]` table -> Remote, or a one-line ConfigError naming the bad key."""
    import re

    where = f"{path}: [remotes.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: `remotes.{name}` must be a table (`[remotes.{name}]` followed by its keys)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{where}: a remote's name takes letters, digits, `_`, `.` and `-` (it is the "
                          f"`{name}/` of its model names)")
    for k in table:
        if k not in REMOTE_KEYS:
            raise ConfigError(f"{where}: unknown key `{k}`{_did_you_mean(k, REMOTE_KEYS)} (known: {', '.join(REMOTE_KEYS)})")
    if "url" not in table:
        raise ConfigError(f'{where}: `url` is missing (e.g. url = "http://127.0.0.1:8000/v1")')
    urls = table["url"] if isinstance(table["url"], list) else [table["url"]]
    if not urls or not all(isinstance(u, str) and re.match(r"https?://[^/\s]+", u) for u in urls):
        raise ConfigError(f"{where}: `url` must be an http:// or https:// URL or a non-empty list of them, "
                          f"not {table['url']!r}")
    r = Remote(name, [u.rstrip("/") for u in urls])
    env = table.get("api_key_env")
    if env is not None:
        if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"{where}: `api_key_env` names the environment variable that holds the key "
                              f"(e.g. \"VLLM_API_KEY\"), never the key itself")
        r.api_key_env = env
    models = table.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, str) and v for v in models.values()):
        raise ConfigError(f'{where}: `models` must be a table of aliases to model ids, e.g. '
                          f'models = {{ coder = "Qwen/Qwen2.5-Coder-7B" }}')
    for alias in models:
        if "/" in alias:
            raise ConfigError(f"{where}: model alias `{alias}` must not contain `/`")
    r.models = dict(models)
    r.fim = table.get("fim", "none")
    if r.fim not in FIM_MODES:
        raise ConfigError(f"{where}: `fim` must be infill, tokens or none, not {r.fim!r}")
    tpl = table.get("fim_template")
    if tpl is not None:
        if not isinstance(tpl, str) or "{prefix}" not in tpl or "{suffix}" not in tpl:
            raise ConfigError(f"{where}: `fim_template` must be a string holding {{prefix}} and {{suffix}}, e.g. "
                              f'"<|fim_prefix|>{{prefix}}<|fim_suffix|>{{suffix}}<|fim_middle|>"')
        r.fim_template = tpl
    if "timeout" in table:
        try:
            r.timeout = parse_duration(table["timeout"])
        except ValueError as exc:
            raise ConfigError(f"{where}: `timeout`: {exc}") from None
        if not r.timeout > 0:
            raise ConfigError(f"{where}: `timeout` must be more than 0, not {table['timeout']!r}")
    return r


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
        if key in ("threads", "max_batch") and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be 1 or more, not {value}")
        setattr(cfg, key, value)
    return cfg


def daemon_args(**flags) -> list:
    """The same flags as `python -m localai.daemon` arguments (for a background start)."""
    out = []
    for key, value in flags.items():
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out
