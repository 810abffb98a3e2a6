"""Memory admission (issue 19, item 3) on a real daemon and real model files: models that do
not fit beside the loaded ones evict the least recently used idle one first; a model that
cannot fit while another is busy is an `out_of_memory` error naming the figures, and the busy
request finishes untouched. The machine's size is the one thing faked: the daemon runs with
`admission.available_bytes` = a fixed limit minus what its loaded models take (weights + one
full context's KV cache), as a cgroup's limit minus usage would be. And the cgroup lookup
itself: the process's own cgroup directory (and its ancestors), not the mount's top.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from localai.client import Client, DaemonError
from localai.daemon import admission
from localai.gguf_file import GGUFFile
from tiny import write_tiny

WRAPPER = r'''
import os, runpy, sys
from localai.daemon import admission, scheduler
from localai.gguf_file import GGUFFile
LIMIT = int(os.environ["LOCALAI_TEST_LIMIT"])
made = []
_init = scheduler.Scheduler.__init__
def init(self, *a, **k):
    _init(self, *a, **k)
    made.append(self)
scheduler.Scheduler.__init__ = init
def available():
    used = sum(os.path.getsize(m.path) + admission.kv_bytes_per_token(GGUFFile(m.path)) * m.llm.n_ctx
               for m in made[0].models.values() if m.llm is not None)
    return max(0, LIMIT - used), "a test limit"
admission.available_bytes = available
sys.argv = ["localai.daemon"] + sys.argv[1:]
runpy.run_module("localai.daemon", run_name="__main__")
'''


def need(path: str, n_ctx: int = 256) -> int:
    return os.path.getsize(path) + admission.kv_bytes_per_token(GGUFFile(path)) * n_ctx


@pytest.fixture
def models(tmp_path):
    a = str(write_tiny(tmp_path / "tiny-a.gguf", seed=1, name="tiny-a-instruct"))
    b = str(write_tiny(tmp_path / "tiny-b.gguf", seed=2, name="tiny-b-instruct"))
    c = str(write_tiny(tmp_path / "tiny-c.gguf", seed=3, d_ff=512, name="tiny-c-instruct"))
    assert need(c) > need(a) == need(b)
    return a, b, c


def start(tmp_path, limit: int) -> dict:
    path = str(tmp_path / "run" / "localai.sock")
    (tmp_path / "config").mkdir(exist_ok=True)
    env = dict(os.environ, LOCALAI_SOCKET=path, XDG_CONFIG_HOME=str(tmp_path / "config"),
               LOCALAI_TEST_LIMIT=str(limit))
    env.pop("LOCALAI_CONFIG", None)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "--socket", path, "--keep-alive", "-1"],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return {"path": path, "proc": proc, "log": log}


def gen(path, model, **kw):
    with Client(path, autostart=False, timeout=60) as c:
        return c.call("generate", **{"prompt": "the cat", "model": model, "max_tokens": 4, "temperature": 0, **kw})


def loaded(path) -> list[str]:
    with Client(path, autostart=False, timeout=60) as c:
        return sorted(os.path.basename(m["path"]) for m in c.call("status")["models"])


def test_a_model_that_does_not_fit_evicts_the_least_recently_used(tmp_path, models):
    a, b, c = models
    d = start(tmp_path, need(a) + need(c) + need(b) // 2)  # A and B fit; C fits beside one of them
    try:
        want = {m: gen(d["path"], m)["text"] for m in (a, b)}
        assert loaded(d["path"]) == ["tiny-a.gguf", "tiny-b.gguf"]
        assert gen(d["path"], a)["text"] == want[a]  # A is now the most recently used
        gen(d["path"], c)
        assert loaded(d["path"]) == ["tiny-a.gguf", "tiny-c.gguf"]  # B (least recent) made room
        log = d["log"].read_text()
        assert f"INFO unloaded {a}" not in log, log
        assert log.index(f"INFO unloaded {b} to make room") < log.index(f"INFO loaded {c} "), log  # before, not after
        assert gen(d["path"], b)["text"] == want[b]  # and B comes back, evicting A now
        assert loaded(d["path"]) == ["tiny-b.gguf", "tiny-c.gguf"]
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)


def test_no_room_beside_a_busy_model_is_an_error_naming_the_figures(tmp_path, models):
    a, _, c = models
    d = start(tmp_path, need(a) + need(c) // 2 + need(a) // 4)  # C alone fits; beside A it does not
    assert need(c) <= need(a) + need(c) // 2 + need(a) // 4
    try:
        for prompt in ("the cat", "once upon a time", "a red boat", "the river", "x", "hello"):
            solo = gen(d["path"], a, max_tokens=120, prompt=prompt)
            if solo["finish_reason"] == "length":  # long enough to be busy while C is asked for
                break
        assert solo["finish_reason"] == "length", solo
        with Client(d["path"], autostart=False, timeout=60) as busy:
            rid = busy.send("generate", {"prompt": prompt, "model": a, "max_tokens": 120, "temperature": 0})
            events = busy.events(rid)
            first = next(events)
            with pytest.raises(DaemonError) as exc:
                gen(d["path"], c)
            rest = list(events)
        assert exc.value.code == "out_of_memory", exc.value.message
        msg = exc.value.message
        assert "tiny-c.gguf with n_ctx 256 needs" in msg and f"{need(c) / 1e6:,.0f} MB" in msg, msg
        assert "is available (a test limit)" in msg
        assert first.text + "".join(e.text for e in rest[:-1]) == rest[-1].text == solo["text"]
        gen(d["path"], c)  # A is idle now: it makes room
        assert loaded(d["path"]) == ["tiny-c.gguf"]
    finally:
        d["proc"].terminate()
        d["proc"].wait(10)


# --- which cgroup limits the daemon --------------------------------------------------------------

def test_the_cgroup_limit_is_read_from_the_process_own_cgroup_and_its_ancestors(tmp_path):
    v1 = tmp_path / "memory"
    v2 = tmp_path / "unified"
    own = v1 / "box" / "job"
    own.mkdir(parents=True)
    (v2 / "user.slice" / "app").mkdir(parents=True)
    for d, limit, usage in ((v1, 1 << 62, 9_000_000_000), (v1 / "box", 4_000_000_000, 1_000_000_000),
                            (own, 1 << 62, 500_000_000)):
        (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (v2 / "user.slice" / "app" / "memory.max").write_text("2000000000\n")
    (v2 / "user.slice" / "app" / "memory.current").write_text("1500000000\n")
    (v2 / "user.slice" / "memory.max").write_text("max\n")
    (v2 / "user.slice" / "memory.current").write_text("1600000000\n")
    mountinfo = (f"35 31 0:32 / {v1} rw,relatime - cgroup cgroup rw,memory\n"
                 f"36 31 0:33 / {tmp_path}/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                 f"41 31 0:38 / {v2} rw,relatime - cgroup2 cgroup2 rw\n")
    dirs = admission.cgroup_dirs("4:memory:/box/job\n3:cpu:/elsewhere\n0::/user.slice/app\n", mountinfo)
    assert dirs == [(str(own), "cgroup"), (str(v1 / "box"), "cgroup"), (str(v1), "cgroup"),
                    (str(v2 / "user.slice" / "app"), "cgroup2"), (str(v2 / "user.slice"), "cgroup2"),
                    (str(v2), "cgroup2")]
    # a container with its own cgroup namespace: the mount's root is the cgroup itself
    inside = admission.cgroup_dirs("0::/\n", f"41 31 0:38 / {v2} rw - cgroup2 cgroup2 rw\n")
    assert inside == [(str(v2), "cgroup2")]
    # the least room wins: box's 3 GB (v1) vs app's 0.5 GB (v2)
    rooms = []
    for d, kind in dirs:
        lf, uf = admission.CGROUP_FILES[kind]
        lim, use = admission._read_int(os.path.join(d, lf)), admission._read_int(os.path.join(d, uf))
        if lim is not None and use is not None and lim < (1 << 60):
            rooms.append(lim - use)
    assert min(rooms) == 500_000_000


# --- --no-daemon admits the same way -------------------------------------------------------------

def test_no_daemon_admits_and_sizes_its_prompt_cache_like_the_daemon(tmp_path, models, monkeypatch):
    from localai.config import Config
    from localai.daemon.inprocess import InProcessClient

    a, _, _ = models
    monkeypatch.setattr(admission, "available_bytes", lambda: (need(a, 100_000) - 1, "a test limit"))
    with pytest.raises(DaemonError) as exc:
        InProcessClient(Config(model=a, n_ctx=100_000)).call("generate", prompt="the cat", max_tokens=2)
    assert exc.value.code == "out_of_memory" and "tiny-a.gguf with n_ctx 100,000 needs" in exc.value.message
    monkeypatch.setattr(admission, "available_bytes", lambda: (1 << 40, "a test limit"))
    c = InProcessClient(Config(model=a))
    assert c.call("generate", prompt="the cat", max_tokens=2, temperature=0)["text"]
    ((llm, cache),) = c._models.values()
    assert llm.n_ctx == 256 and cache.max_bytes == max(256 * 512, 2 * os.path.getsize(a))  # not 1 GiB
