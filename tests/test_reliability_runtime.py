"""The fallback runtime directory (`$TMPDIR/localai-$UID` when XDG_RUNTIME_DIR is unset) is
safe against another local user (issue 19, item 2). Each trap is planted by a real process of
another uid (the tests run as root and drop to uid 12345); the victim runs the real CLI and
daemon. Refusals are one line, nothing is opened, chmodded or written through a trap, and not
a byte reaches a fake daemon."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

OTHER = 12345  # the other local user

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="planting traps as another uid needs root")


def as_other(code: str, *, wait: bool = True) -> subprocess.Popen:
    """Run `code` with the system python as uid OTHER (no access to root's venv)."""
    proc = subprocess.Popen(["/usr/bin/python3", "-c", textwrap.dedent(code)], user=OTHER, group=OTHER,
                            extra_groups=[], cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    return proc


@pytest.fixture
def tmp(tmp_path):
    """A sticky, world-writable temp dir like /tmp, and the victim's environment using it."""
    d = tempfile.mkdtemp(prefix="localai-trap-", dir="/tmp")
    os.chmod(d, 0o1777)
    env = dict(os.environ, TMPDIR=d, XDG_CONFIG_HOME=str(tmp_path / "config"), LOCALAI_KERNELS="numpy")
    for k in ("XDG_RUNTIME_DIR", "LOCALAI_SOCKET", "LOCALAI_CONFIG"):
        env.pop(k, None)
    yield d, env, os.path.join(d, f"localai-{os.getuid()}")
    subprocess.run(["rm", "-rf", d])


def localai(env, *args, input=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localai", *args], env=env, input=input, text=True,
                          capture_output=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def assert_one_line_refusal(proc, *words):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


def victim_file(tmp_path) -> tuple[str, os.stat_result]:
    f = tmp_path / "victim.txt"
    f.write_text("the victim's data\n")
    os.chmod(f, 0o640)
    return str(f), os.stat(f)


def test_the_fallback_dir_is_made_0700_and_ours(tmp):
    d, env, rundir = tmp
    r = localai(env, "serve", "--background")
    try:
        assert r.returncode == 0, r.stderr
        st = os.lstat(rundir)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
        for name in ("localai.log", "localai.lock", "localai.pid"):
            fst = os.lstat(os.path.join(rundir, name))
            assert stat.S_ISREG(fst.st_mode) and stat.S_IMODE(fst.st_mode) == 0o600, name
        assert localai(env, "status").returncode == 0
    finally:
        localai(env, "stop")


def test_a_symlinked_dir_is_refused_and_its_target_untouched(tmp, tmp_path):
    d, env, rundir = tmp
    target = tmp_path / "victims-dir"  # a directory of the victim's the link points at
    target.mkdir()
    os.chmod(target, 0o755)
    as_other(f"import os; os.symlink({str(target)!r}, {rundir!r})")
    r = localai(env, "serve", "--background")
    assert_one_line_refusal(r, rundir, "symbolic link", "XDG_RUNTIME_DIR")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755 and os.listdir(target) == []


def test_a_dir_of_another_uid_is_refused(tmp):
    d, env, rundir = tmp
    as_other(f"import os; os.mkdir({rundir!r}); os.chmod({rundir!r}, 0o777)")
    r = localai(env, "serve", "--background")
    assert_one_line_refusal(r, rundir, f"uid {OTHER}")
    assert os.listdir(rundir) == []


@pytest.mark.parametrize("name,cmd", [("localai.log", ["serve", "--background"]),
                                      ("localai.lock", ["serve"])])
def test_a_symlinked_file_in_a_loose_dir_is_refused(tmp, tmp_path, name, cmd):
    """Our directory left world-writable: another user plants a link to one of our files."""
    d, env, rundir = tmp
    os.mkdir(rundir)
    os.chmod(rundir, 0o777)
    path, before = victim_file(tmp_path)
    as_other(f"import os; os.symlink({path!r}, {os.path.join(rundir, name)!r})")
    r = localai(env, *cmd)
    assert r.returncode != 0
    assert "symbolic link" in r.stderr and "Traceback" not in r.stderr, r.stderr
    after = os.stat(path)
    assert (after.st_mode, after.st_size, after.st_mtime_ns) == (before.st_mode, before.st_size, before.st_mtime_ns)
    assert open(path).read() == "the victim's data\n"
    assert stat.S_IMODE(os.lstat(rundir).st_mode) == 0o700  # and the directory is private again


def test_a_fake_daemon_of_another_uid_gets_not_a_byte(tmp):
    d, env, rundir = tmp
    got = os.path.join(d, "got")
    fake = as_other(f"""
        import os, socket
        os.mkdir({rundir!r}); os.chmod({rundir!r}, 0o777)
        s = socket.socket(socket.AF_UNIX); s.bind({os.path.join(rundir, 'localai.sock')!r})
        os.chmod({os.path.join(rundir, 'localai.sock')!r}, 0o777); s.listen(8); s.settimeout(20)
        print("ready", flush=True)
        data = b""
        try:
            while True:
                c, _ = s.accept(); c.settimeout(2)
                c.sendall(b'{{"id": 1, "event": "done", "result": {{}}}}\\n')
                try:
                    while (chunk := c.recv(65536)):
                        data += chunk
                except OSError:
                    pass
                open({got!r}, "wb").write(data)
        except OSError:
            pass
    """, wait=False)
    assert fake.stdout.readline().strip() == "ready", fake.stderr.read()
    try:
        r = localai(env, "ask", "--max-tokens", "4", "what is my secret?", input="my secret text\n")
        assert_one_line_refusal(r, f"uid {OTHER}", "impersonating")
        s = localai(env, "status")
        assert s.returncode != 0 and "Traceback" not in s.stderr
        time.sleep(0.5)
        assert not os.path.exists(got) or open(got, "rb").read() == b""
    finally:
        fake.kill()
        fake.wait()
