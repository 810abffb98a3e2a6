"""The everyday CLI through the daemon (real model, temp socket): ask streams the in-process
greedy answer, reads stdin, --json, --no-daemon, the config file, complete, rewrite, serve
--background / status / stop, clear errors, and a client path without numpy."""
from __future__ import annotations

import json
import os

import pytest

from test_daemon_support import greedy_chat, run_cli, shared_daemon


@pytest.fixture(scope="module")
def env(smollm2_path):
    return shared_daemon()["env"]


def _printed(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def test_ask_streams_the_in_process_greedy_answer(env):
    q = "What is the capital of France?"
    r = run_cli(["ask", "--temperature", "0", "--max-tokens", "16", q], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _printed(greedy_chat([{"role": "user", "content": q}], 16))


def test_ask_reads_piped_stdin_and_prints_json(env):
    r = run_cli(["ask", "--json", "-t", "0", "-n", "8", "Repeat this:"], env, input="The sky is blue.\n")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] == greedy_chat([{"role": "user", "content": "Repeat this:\n\nThe sky is blue.\n"}], 8)
    assert out["finish_reason"] in ("length", "eos") and out["timings"]["predicted_n"] <= 8
    r2 = run_cli(["ask", "--no-stream", "-t", "0", "-n", "8", "Repeat this:"], env, input="The sky is blue.\n")
    assert r2.stdout == _printed(out["text"])


def test_no_daemon_gives_the_same_answer(env, tmp_path):
    q = "Say hello."
    lone = dict(env, LOCALAI_SOCKET=str(tmp_path / "nobody-here.sock"))
    r = run_cli(["ask", "--no-daemon", "-t", "0", "-n", "8", q], lone)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _printed(greedy_chat([{"role": "user", "content": q}], 8))
    assert not os.path.exists(tmp_path / "nobody-here.sock")  # no daemon was started


def test_config_file_sets_the_defaults_and_flags_override_it(env, tmp_path):
    conf = tmp_path / "localai"
    conf.mkdir()
    (conf / "config.toml").write_text('system = "You answer in one word."\n[sampling]\ntemperature = 0.0\n'
                                      'max_tokens = 5\n')
    cenv = dict(env, XDG_CONFIG_HOME=str(tmp_path))
    r = run_cli(["ask", "--json", "Name a fruit."], cenv)
    out = json.loads(r.stdout)
    assert out["timings"]["predicted_n"] <= 5
    assert out["text"] == greedy_chat([{"role": "system", "content": "You answer in one word."},
                                       {"role": "user", "content": "Name a fruit."}], 5)
    r = run_cli(["ask", "--json", "-n", "2", "Name a fruit."], cenv)
    assert json.loads(r.stdout)["timings"]["predicted_n"] <= 2
    (conf / "config.toml").write_text("[sampling]\ntemprature = 0\n")
    r = run_cli(["ask", "Hi"], cenv)
    assert r.returncode == 1 and "unknown key `sampling.temprature`" in r.stderr and "Traceback" not in r.stderr


def test_complete_and_rewrite_commands(env, tmp_path):
    src = tmp_path / "add.py"
    src.write_text("def add(a, b):\n    return \n\nprint(add(1, 2))\n")
    r = run_cli(["complete", "--file", str(src), "--line", "2", "--column", "12", "-n", "4", "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["timings"]["predicted_n"] >= 1
    r = run_cli(["rewrite", "-i", "Fix the spelling.", "-t", "0", "-n", "12"], env, input="I like aples.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "```" not in r.stdout and r.stdout.endswith("\n")


def test_errors_are_one_clear_line(env):
    r = run_cli(["ask"], env)
    assert r.returncode == 1 and "nothing to ask" in r.stderr
    r = run_cli(["ask", "-m", "no-such-model", "Hi"], env)
    assert r.returncode == 1 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_serve_background_status_stop(env, tmp_path):
    sock = str(tmp_path / "s" / "localai.sock")
    benv = dict(env, LOCALAI_SOCKET=sock)
    r = run_cli(["serve", "--background", "--keep-alive", "5m"], benv)
    assert r.returncode == 0 and "running (pid" in r.stdout, r.stderr
    r = run_cli(["status"], benv)
    assert r.returncode == 0 and "localai daemon: running" in r.stdout and "keep-alive: 5m 0s" in r.stdout
    st = json.loads(run_cli(["status", "--json"], benv).stdout)
    assert st["running"] and st["socket"] == sock and st["keep_alive_s"] == 300
    r = run_cli(["stop"], benv)
    assert r.returncode == 0 and f"stopped (pid {st['pid']})" in r.stdout
    r = run_cli(["status"], benv)
    assert r.returncode == 1 and "not running" in r.stdout
    assert run_cli(["stop"], benv).stdout.strip() == "localai daemon is not running"


def test_status_of_the_shared_daemon(env):
    r = run_cli(["status"], env)
    assert r.returncode == 0
    assert "model: smollm2 (llama Q4_1" in r.stdout and "tokens:" in r.stdout


def test_client_path_imports_no_numpy(env):
    r = run_cli(["ask", "-n", "1", "What is the capital of France?"], dict(env, PYTHONPROFILEIMPORTTIME="1"))
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "localai.client" in imported
    assert not {"numpy", "localai.engine", "mlx"} & imported
