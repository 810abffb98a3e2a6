"""A new user's first run (issue 11, "first run"): README line 1 in a fresh clone, then the test
line's editable install used from another directory, in a temporary venv, through the real
daemon that `localai ask` starts.

The clone is this repository's HEAD plus the uncommitted changes to its tracked files (`git
stash create`), so the test checks the working tree. The venv sees the running interpreter's
packages (numpy, numba, ...) through plain `.pth` path lines (so their own `.pth` files, an
editable localai among them, do not run); localai itself is a real `pip install .` of the
clone (pip fetches setuptools for the build, as it does for the test line), then a real
`pip install -e .`. The tests run in order
on one venv.
"""
from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France?"
COMPILING = "compiling the CPU kernels once"


def _git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _fresh_clone(dest: Path) -> Path:
    rev = _git("stash", "create") or _git("rev-parse", "HEAD")  # a commit of the working tree
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(ROOT), str(dest)], check=True)
    _git("checkout", "-q", rev, cwd=dest)
    return dest


def _venv(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    purelib = subprocess.run([dest / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # after the venv's own site-packages: the running interpreter's (pip, setuptools, numpy, ...).
    # Plain path lines: that directory's own .pth files (an editable localai) are not run.
    (Path(purelib) / "zz_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return dest


def _pip_install(venv: Path, clone: Path, *spec: str) -> None:
    # as the README says, build isolation included; --no-deps: they are all there already
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", *spec], cwd=clone,
                   check=True, timeout=600)


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_path):
    tmp = tmp_path_factory.mktemp("first-run")
    for d in ("run", "cache", "config", "elsewhere"):
        (tmp / d).mkdir()
    (tmp / "elsewhere" / "queue.py").write_text('raise SystemExit("queue.py in the current directory was imported")\n')
    venv, clone = _venv(tmp / "venv"), _fresh_clone(tmp / "clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALAI_", "NUMBA_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", XDG_RUNTIME_DIR=str(tmp / "run"),
               XDG_CACHE_HOME=str(tmp / "cache"), XDG_CONFIG_HOME=str(tmp / "config"))
    yield {"tmp": tmp, "venv": venv, "clone": clone, "env": env}
    subprocess.run(["localai", "stop"], env=env, capture_output=True, timeout=60)


def _localai(world, cwd, *args, timeout=900, **env):
    return subprocess.run(["localai", *args], cwd=cwd, env=dict(world["env"], **env), capture_output=True,
                          text=True, timeout=timeout)


def _ask(world, cwd, **env):
    r = _localai(world, cwd, "ask", "-t", "0", "-n", "8", QUESTION, **env)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout, r.stdout
    return r


def _stop(world):
    r = _localai(world, world["tmp"], "stop", timeout=60)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr


def _imported_from(world, cwd) -> str:
    return subprocess.run(["python", "-c", "import localai; print(localai.__file__)"], cwd=cwd, env=world["env"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _numba_files(root: Path) -> list:
    return [p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")]


def _site_localai(world) -> Path:
    return next((world["venv"] / "lib").glob("python3*/site-packages")) / "localai"


def test_readme_line_one_in_a_fresh_clone_and_elsewhere(world):
    tmp, venv, clone = world["tmp"], world["venv"], world["clone"]
    site_localai = _site_localai(world)

    # README line 1, inside the clone: `pip install . && localai ask "…"`
    _pip_install(venv, clone, ".")
    assert Path(_imported_from(world, tmp)).is_relative_to(site_localai)
    r = _ask(world, clone)
    # the first run compiles the kernels: the daemon says so through the client, once
    assert r.stderr.count(COMPILING) == 1, r.stderr
    # ... into the user's cache, never into the install
    assert _numba_files(tmp / "cache" / "localai" / "numba")
    assert not _numba_files(site_localai)
    _stop(world)

    # another directory, holding a queue.py: the new daemon loads the kernels from the cache, silently
    r = _ask(world, tmp / "elsewhere")
    assert COMPILING not in r.stderr, r.stderr
    _stop(world)


def test_a_daemon_that_cannot_import_its_own_code_stops(world):
    """The old way of starting it (`python -m localai.daemon` inside a source tree) imports the
    tree's `localai`, which has no `kernels`: the first request fails, the daemon says why in
    its log and exits, and the client prints one line."""
    sock = world["tmp"] / "run" / "broken" / "localai.sock"
    sock.parent.mkdir(mode=0o700)
    log = open(world["tmp"] / "broken.log", "wb")
    daemon = subprocess.Popen(["python", "-m", "localai.daemon", "--socket", str(sock)], cwd=world["clone"],
                              env=world["env"], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = _localai(world, world["tmp"], "ask", "-n", "4", QUESTION, LOCALAI_SOCKET=str(sock), timeout=120)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot import its own code" in lines[0] and "kernels" in lines[0], r.stderr
        assert daemon.wait(timeout=60) == 1
        logged = (world["tmp"] / "broken.log").read_text()
        assert "cannot import its own code" in logged and "Traceback" in logged
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=30)
        log.close()


def test_the_editable_install_then_answers_from_elsewhere(world):
    """The test line's editable install replaces the regular one: no leftover file may turn
    site-packages/localai into a namespace package. LOCALAI_KERNELS=numpy spares a second
    compile (the kernels' source moved): the import path is what is checked here."""
    tmp, clone = world["tmp"], world["clone"]
    _pip_install(world["venv"], clone, "-e", ".")
    assert not _site_localai(world).exists(), list(_site_localai(world).rglob("*"))
    assert Path(_imported_from(world, tmp / "elsewhere")).is_relative_to(clone / "localai")
    _ask(world, tmp / "elsewhere", LOCALAI_KERNELS="numpy")
    _stop(world)


def test_numba_cache_dir_follows_xdg_and_a_users_own_setting(monkeypatch):
    from localai.kernels import _numba_setup

    home = os.path.expanduser("~")
    for env, want in [({}, f"{home}/.cache/localai/numba"),
                      ({"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/localai/numba"),
                      ({"XDG_CACHE_HOME": "relative"}, f"{home}/.cache/localai/numba"),  # the XDG spec
                      ({"NUMBA_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/x"}, "/mine")]:
        for k in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert _numba_setup.cache_dir() == want, env
    # and numba itself uses it, whoever imports it first
    code = ("import os, sys, importlib; first = sys.argv[1]; importlib.import_module(first); "
            "import localai.kernels, numba.core.config as c; print(c.CACHE_DIR)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    for first in ("localai.kernels", "numba"):
        out = subprocess.run([sys.executable, "-c", code, first], env=dict(env, XDG_CACHE_HOME="/x/cache"),
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == "/x/cache/localai/numba", first
