"""Base models (issue 11): gemma3-270m continues text but follows no instructions. The catalog,
`localai models` and `--json` say which models are base and which instruct (read from the
file's metadata), and chat-style commands on a base model refuse in one line, in process and
through the daemon, rather than loop on a chat template the model never learned."""
from __future__ import annotations

import json

import pytest

from localai import store
from localai.gguf_file import GGUFFile
from test_daemon_support import run_cli, shared_daemon


def test_the_real_files_metadata_says_which_is_which(smollm2_path, gemma3_path):
    assert store.model_kind(GGUFFile(smollm2_path).metadata) == "instruct"  # has a chat template
    assert store.model_kind(GGUFFile(gemma3_path).metadata) == "base"       # none, "Gemma 3 270m"
    assert {e.name: e.kind for e in store.CATALOG.values()} == {"smollm2": "instruct", "gemma3-270m": "base"}


@pytest.mark.parametrize("name, kind", [
    ("gemma-3-270m-it", "instruct"), ("Qwen2.5 0.5B Instruct", "instruct"), ("Llama 2 7B Chat", "instruct"),
    ("Gemma 3 270m", "base"), ("Italian GPT-2", "base"), ("Llama 3.2 1B", "base"),
])
def test_a_file_without_a_template_is_base_unless_its_name_says_instruct(name, kind):
    assert store.model_kind({"general.name": name}) == kind


def test_models_lists_the_kind(gemma3_path, smollm2_path):
    r = run_cli(["models", "--json"], None)
    assert r.returncode == 0, r.stderr
    kinds = {m["name"]: m["kind"] for m in json.loads(r.stdout)}
    assert kinds["smollm2"] == "instruct" and kinds["gemma3-270m"] == "base"
    table = run_cli(["models"], None).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "ARCH", "QUANT", "KIND"]
    assert next(line for line in table if line.startswith("gemma3-270m")).split()[3] == "base"


def _one_line_refusal(r):
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a base model" in lines[0] and "localai generate" in lines[0], r.stderr
    assert r.stdout == ""


def test_chat_commands_on_a_base_model_refuse_in_one_line(gemma3_path, tmp_path):
    env = shared_daemon()["env"]
    _one_line_refusal(run_cli(["ask", "-m", "gemma3-270m", "-n", "4", "What is the capital of France?"], env))
    _one_line_refusal(run_cli(["rewrite", "-m", "gemma3-270m", "--instruction", "fix the spelling"], env,
                              input="teh cat\n"))
    _one_line_refusal(run_cli(["ask", "--no-daemon", "-m", "gemma3-270m", "-n", "4", "Hi"], env, timeout=300))
    # what a base model is for still works
    r = run_cli(["generate", "-m", "gemma3-270m", "--prompt", "Question: What is the capital of France?\nAnswer:",
                 "-n", "4", "--temperature", "0"], env, timeout=300)
    assert r.returncode == 0 and "Paris" in r.stdout, r.stdout + r.stderr
