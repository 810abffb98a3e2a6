"""`localai bench` end to end on the real SmolLM2: fresh worker processes, the figures the issue
names, and the table."""
from __future__ import annotations

import json
import subprocess
import sys

KEYS = ("pp_tps", "tg_tps", "ttft_ms_cold", "ttft_ms_warm", "load_s", "peak_rss_mib")
ARGS = ["-p", "32", "-n", "8", "-r", "2", "--ttft-prompt", "64", "--ttft-new", "8"]


def bench(path, *extra):
    out = subprocess.run([sys.executable, "-m", "localai", "bench", "-m", str(path), *ARGS, *extra],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_json(smollm2_path):
    res = json.loads(bench(smollm2_path, "--json").strip().splitlines()[-1])
    assert len(res["runs"]) == 2
    for k in KEYS:
        s = res["summary"][k]
        assert res[k] == s["median"] and s["min"] <= s["median"] <= s["max"], k
        assert s["min"] > 0, k
    assert res["ttft_ms_warm"] < res["ttft_ms_cold"]  # 8 new tokens on a cached prefix vs all 64
    assert 50 < res["peak_rss_mib"] < 2000
    run = res["runs"][0]
    assert run["backend"] == "numpy" and run["kernels"] in ("numba", "numpy")
    assert run["blas"].startswith("openblas ")


def test_bench_table(smollm2_path):
    out = bench(smollm2_path)
    assert "backend=numpy" in out and "blas=openblas" in out
    for label in ("prefill pp32", "decode tg8", "ttft cold (64 tok)", "ttft warm (+8 tok)", "load", "peak RSS"):
        assert f"  {label}" in out, label


def test_bench_bad_setting_is_one_line(smollm2_path):
    """A bad $LOCALAI_ACTIVATION_BITS is the CLI's one line before any worker starts."""
    import os

    env = dict(os.environ, LOCALAI_ACTIVATION_BITS="x")
    out = subprocess.run([sys.executable, "-m", "localai", "bench", "-m", str(smollm2_path), *ARGS],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == "localai: error: LOCALAI_ACTIVATION_BITS must be 8, 16 or auto, not 'x'"


def test_bench_bad_model_file_is_one_line(tmp_path):
    """Input a worker rejects (a file that is not GGUF) comes back as the CLI's one line, not
    the worker's traceback."""
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    out = subprocess.run([sys.executable, "-m", "localai", "bench", "-m", str(bad), *ARGS],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.startswith("localai: error: ") and "\n" not in line and "Traceback" not in line, line
    assert str(bad) in line


def test_bench_takes_activation_bits_from_config_env_and_flag(smollm2_path, tmp_path):
    """bench runs with the config's `activation_bits`, which $LOCALAI_ACTIVATION_BITS and then
    --activation-bits override; it reports the bits in effect (16 where the kernels have no
    int8 tile)."""
    import os

    from localai.kernels import qmatmul

    eight = 8 if qmatmul.x8_available() else 16
    cfg = tmp_path / "config.toml"
    cfg.write_text("activation_bits = 8\n")
    env = {k: v for k, v in os.environ.items() if k != "LOCALAI_ACTIVATION_BITS"}
    env["LOCALAI_CONFIG"] = str(cfg)

    def bits(*extra, **more):
        out = subprocess.run([sys.executable, "-m", "localai", "bench", "-m", str(smollm2_path), *ARGS[:4],
                              "-r", "1", "--ttft-prompt", "0", "--json", *extra],
                             capture_output=True, text=True, timeout=600, env=dict(env, **more))
        assert out.returncode == 0, out.stderr[-2000:]
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["activation_bits"] == res["runs"][0]["activation_bits"]
        return res["activation_bits"]

    assert bits() == eight  # the config file
    assert bits(LOCALAI_ACTIVATION_BITS="16") == 16  # the environment over the file
    assert bits("--activation-bits", "auto", LOCALAI_ACTIVATION_BITS="8") == 16  # the flag over both; 135M: 16
    out = subprocess.run([sys.executable, "-m", "localai", "bench", "-m", str(smollm2_path), "--activation-bits", "4"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 2 and "must be 8, 16 or auto, not '4'" in out.stderr
