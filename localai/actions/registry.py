"""The daemon's side of actions: the user's action files (loaded on start, reloaded when they
change), the context an action needs, and the run of one action: its prompt, its sampling and
the filter that post-processes its answer.

Nothing in a user's file can stop the daemon: a file that fails to import is listed in
`errors` (file, line, message) and its actions are missing; an action that raises answers its
request with an `action_failed` error naming the file and line. Everything else keeps working.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass, field, replace

from . import (ACTIONS, CONTEXT_FIELDS, Action, ActionError, Context, MissingContext, UnknownAction, _call,
               host_os, messages, user_shell)
from .. import actions as _api


def user_dir() -> str:
    """`$XDG_CONFIG_HOME/localai/actions` (else `~/.config/localai/actions`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "localai", "actions")


def names_file() -> str:
    """`$XDG_CACHE_HOME/localai/action-names` (else `~/.cache/...`): the action names, one a
    line, written by the daemon when they change, for the shells' Tab completion of
    `localai run` (which runs no program)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "localai", "action-names")


def _where(exc: BaseException, path: str | None = None) -> tuple[str, int]:
    """The file and line an exception points at: a SyntaxError's own, else the innermost
    frame in `path` (the user's file), else the innermost frame outside localai."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno or 0
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for pick in (lambda f: f.filename == path, lambda f: not f.filename.startswith(here), lambda f: True):
        hits = [f for f in frames if pick(f)]
        if hits:
            return hits[-1].filename, hits[-1].lineno or 0
    return path or "?", 0


def _message(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


@dataclass
class _File:
    mtime: tuple
    actions: list
    error: dict | None


class Registry:
    """The built-in actions and the user's, by name. `refresh()` (cheap: one stat per file)
    reloads the files that changed; call it before each use."""

    def __init__(self, paths: list | None = None, include_user_dir: bool = True):
        self.paths = [os.path.expanduser(p) for p in (paths or [])]
        self.include_user_dir = include_user_dir
        self.files: dict[str, _File] = {}
        self.lock = threading.Lock()
        self.published: list | None = None  # the names last written to names_file()

    def _sources(self) -> list:
        out = []
        for p in ([user_dir()] if self.include_user_dir else []) + self.paths:
            if os.path.isdir(p):
                try:
                    names = sorted(os.listdir(p))
                except OSError:
                    continue
                out += [os.path.join(p, n) for n in names if n.endswith(".py") and not n.startswith((".", "_"))]
            elif os.path.isfile(p):
                out.append(p)
        return [os.path.abspath(p) for p in out]

    def refresh(self) -> None:
        with self.lock:
            seen = set()
            for path in self._sources():
                seen.add(path)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                old = self.files.get(path)
                if old is None or old.mtime != stamp:
                    self.files[path] = self._load(path, stamp)
            for path in set(self.files) - seen:
                del self.files[path]
            self._publish(sorted(self.table()))

    def _publish(self, names: list) -> None:
        """Write the names for completion when they changed (best effort: a read-only cache
        directory costs only the completion of user actions)."""
        if names == self.published:
            return
        self.published = names
        path = names_file()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(n + "\n" for n in names))
            os.replace(tmp, path)
        except OSError:
            pass

    def _load(self, path: str, stamp: tuple) -> _File:
        mod_name = "localai_user_actions." + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        defined: list = []
        _api._loading = defined
        try:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module  # dataclasses and the like look their module up
            spec.loader.exec_module(module)
        except BaseException as exc:  # SystemExit from a stray sys.exit() too: the daemon stays up
            if isinstance(exc, KeyboardInterrupt):
                raise
            file, line = _where(exc, path)
            return _File(stamp, [], {"file": file, "line": line, "message": _message(exc)})
        finally:
            _api._loading = None
        return _File(stamp, [replace(a, source=path) if a.source != path else a for a in defined], None)

    def table(self) -> dict:
        """name -> Action: the built-ins, then each user file in order (a later one overrides)."""
        out = dict(ACTIONS)
        for f in self.files.values():
            for a in f.actions:
                out[a.name] = a
        return out

    def errors(self) -> list:
        return [f.error for f in self.files.values() if f.error]

    def listing(self) -> dict:
        """The `actions` method's result."""
        self.refresh()
        acts = [{"name": a.name, "help": a.help, "needs": list(a.needs), "output": a.output, "source": a.source}
                for a in sorted(self.table().values(), key=lambda a: a.name)]
        return {"actions": acts, "errors": self.errors()}

    def get(self, name: str) -> Action:
        self.refresh()
        table = self.table()
        if name in table:
            return table[name]
        errors = self.errors()
        broken = "; ".join(f"{e['file']}:{e['line']}: {e['message']}" for e in errors)
        raise UnknownAction(f"no action named {name!r}" + (f" (an action file failed to load: {broken})" if broken
                                                          else f"; actions: {', '.join(sorted(table))}"))


# --- the context an action needs -----------------------------------------------------------

FILETYPES = {".py": "python", ".lua": "lua", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
             ".tsx": "typescriptreact", ".rs": "rust", ".go": "go", ".c": "c", ".h": "c", ".cc": "cpp",
             ".cpp": "cpp", ".hpp": "cpp", ".java": "java", ".rb": "ruby", ".sh": "sh", ".bash": "bash",
             ".zsh": "zsh", ".fish": "fish", ".md": "markdown", ".txt": "text", ".toml": "toml", ".json": "json",
             ".yaml": "yaml", ".yml": "yaml", ".html": "html", ".css": "css", ".sql": "sql", ".kt": "kotlin",
             ".swift": "swift", ".php": "php", ".hs": "haskell"}
MAX_BUFFER_LINES = 200   # `buffer` from a file: this many lines around the cursor
GIT_TIMEOUT_S = 10


def _git_diff_staged(ctx: Context) -> str:
    if not ctx.cwd:
        raise MissingContext("`git_diff_staged` needs the caller's working directory (`cwd`)")
    try:
        r = subprocess.run(["git", "diff", "--staged", "--no-color", "--no-ext-diff"], cwd=ctx.cwd,
                           capture_output=True, text=True, errors="replace", timeout=GIT_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MissingContext("`git` is not installed (needed for the staged diff)") from None
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise MissingContext(f"`git diff --staged` failed in {ctx.cwd}: {exc}") from None
    if r.returncode != 0 and "--no-index" in r.stderr:  # outside a repository git prints its usage
        raise MissingContext(f"{ctx.cwd} is not in a git repository: the staged diff needs one "
                             f"(`git init`, `git add`)")
    if r.returncode != 0:
        raise MissingContext(f"`git diff --staged` failed in {ctx.cwd}: "
                             f"{(r.stderr.strip().splitlines() or ['exit ' + str(r.returncode)])[-1]}")
    if not r.stdout.strip():
        raise MissingContext(f"nothing is staged in {ctx.cwd}: `git add` the changes first")
    return r.stdout


def _file_text(ctx: Context) -> str:
    try:
        with open(ctx.file, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError) as exc:  # ValueError: a path no file system can hold
        raise MissingContext(f"cannot read {ctx.file}: {getattr(exc, 'strerror', None) or exc}") from None


def _buffer(ctx: Context) -> str | None:
    if not ctx.file:
        return None
    lines = _file_text(ctx).split("\n")
    at = (ctx.line or 1) - 1
    lo = max(0, min(at - MAX_BUFFER_LINES // 2, len(lines) - MAX_BUFFER_LINES))
    return "\n".join(lines[lo:lo + MAX_BUFFER_LINES])


# need -> how the daemon fills it when the caller did not (None: it cannot)
COMPUTED = {
    "git_diff_staged": _git_diff_staged,
    "buffer": _buffer,
    "filetype": lambda ctx: FILETYPES.get(os.path.splitext(ctx.file)[1].lower()) if ctx.file else None,
    "os": lambda ctx: host_os(),
    "shell": lambda ctx: user_shell(),
}
# need -> what to tell the caller who did not give it
HINTS = {
    "text": "the selection, the TEXT argument or stdin",
    "instruction": "an instruction (`localai run NAME --instruction ...`, `:LocalAI NAME {instruction}`)",
    "file": "a file (`--file`)",
    "cwd": "the working directory",
    "diagnostics": "the editor's diagnostics",
    "last_command": "the previous shell command (run it from the shell integration)",
}


CONTEXT_TYPES = {"line": int, "column": int, "last_status": int, "diagnostics": list}  # the rest: str


def make_context(given: dict | None) -> Context:
    """A Context from the request's `context` object (an unknown key: ActionError naming it)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(CONTEXT_FIELDS))
    if unknown:
        raise ActionError(f"unknown context field(s) {', '.join(unknown)} (known: {', '.join(CONTEXT_FIELDS)})")
    given = {k: v for k, v in given.items() if v is not None}
    for k, v in given.items():
        want = CONTEXT_TYPES.get(k, str)
        if not isinstance(v, want) or isinstance(v, bool) or (k == "diagnostics" and not all(isinstance(d, dict) for d in v)):
            what = {int: "an integer", list: "a list of {line, column, severity, message}"}.get(want, "a string")
            raise ActionError(f"context `{k}` must be {what}")
    ctx = Context(**given)
    if ctx.file and not os.path.isabs(ctx.file) and ctx.cwd:
        ctx.file = os.path.join(ctx.cwd, ctx.file)
    if not ctx.text and ctx.stdin:
        ctx.text = ctx.stdin
    if ctx.file and not ctx.filetype:
        ctx.filetype = COMPUTED["filetype"](ctx)
    return ctx


def fill_needs(a: Action, ctx: Context) -> None:
    for need in a.needs:
        value = getattr(ctx, need)
        if value not in (None, "", []):
            continue
        compute = COMPUTED.get(need)
        value = compute(ctx) if compute else None
        if value in (None, "", []):
            raise MissingContext(f"the `{a.name}` action needs {HINTS.get(need, '`' + need + '`')}")
        setattr(ctx, need, value)


# --- one run ------------------------------------------------------------------------------

def _user_code_failed(a: Action, what: str, exc: BaseException) -> ActionError:
    file, line = _where(exc, a.source if a.source != "builtin" else None)
    return ActionError(f"the `{a.name}` action failed in its {what} at {file}:{line}: {_message(exc)}")


@dataclass
class Run:
    """A bound action: what the scheduler needs to run it."""
    action: Action
    ctx: Context
    messages: list
    sampling: dict = field(default_factory=dict)  # the action's, under the request's own values


def bind(registry: Registry, name: str, context: dict | None) -> Run:
    """Look the action up, build its context (computing the needs the daemon can) and run its
    prompt builder. ActionError (one line, with file and line for the user's code) when it cannot."""
    a = registry.get(name)
    ctx = make_context(context)
    fill_needs(a, ctx)
    try:
        msgs = messages(a, ctx)
    except ActionError:
        raise
    except Exception as exc:
        raise _user_code_failed(a, "prompt builder", exc) from None
    sampling = dict(a.sampling)
    if a.schema is not None:
        sampling["schema"] = a.schema
    return Run(a, ctx, msgs, sampling)


class ActionFilter:
    """Streams an action's answer through (for `replace` and `insert` outputs with code fences
    and a preamble dropped, as `rewrite` does), stops once the action has `enough`, and at the
    end runs its post-processor: `done` gets result = {"action", "output", "text"[, "json"]}."""

    def __init__(self, run: Run, done: dict):
        from ..daemon.handlers import RewriteFilter

        self.run, self.done_fields = run, done
        a = run.action
        self.inner = RewriteFilter(run.ctx.text if a.output == "replace" else "", run.ctx.instruction or "") \
            if a.output in ("replace", "insert") else None
        self.answer = ""
        self.stopped = False
        self.finished = False
        done["result"] = {"action": a.name, "output": a.output, "text": ""}

    def feed(self, text: str) -> str:
        out = self.inner.feed(text) if self.inner else text
        self.answer += out
        enough = self.run.action.enough
        if enough is not None and not self.stopped:
            try:
                self.stopped = bool(_call(enough, self.answer, self.run.ctx))
            except Exception as exc:
                raise _user_code_failed(self.run.action, "`enough` rule", exc) from None
        return out

    @property
    def done(self) -> bool:
        return self.stopped or bool(self.inner is not None and self.inner.done)

    def finish(self) -> str:
        if self.finished:
            return ""
        self.finished = True
        tail = self.inner.finish() if self.inner else ""
        self.answer += tail
        a = self.run.action
        result = self.answer
        if a.post is not None:
            try:
                result = _call(a.post, self.answer, self.run.ctx)
            except ActionError:
                raise
            except Exception as exc:
                raise _user_code_failed(a, "post-processor", exc) from None
        out = self.done_fields["result"]
        if isinstance(result, str):
            out["text"] = result
        elif result is None:
            out["text"] = ""
        else:
            import json

            try:
                out["text"], out["json"] = json.dumps(result, ensure_ascii=False), result
            except (TypeError, ValueError) as exc:
                raise _user_code_failed(a, "post-processor (its result is not text or JSON)", exc) from None
        return tail
