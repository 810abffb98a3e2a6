"""Regenerate infill_expected.json: llama-server's /infill prompt ids for the requests in
REQUESTS, computed by llama.cpp's own `format_prompt_infill` (see README.md here).

    python tests/data/fim/make_expected.py INFILL_IDS MODELS_DIR > tests/data/fim/infill_expected.json

INFILL_IDS: the infill_ids driver (infill_ids.cpp in this folder, linked with llama.cpp's
tools/server/server-common.cpp); MODELS_DIR: llama.cpp's models/ folder (the vocab GGUFs).
"""
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

PREFIX = ('import os\n\n\ndef load(path: str) -> dict:\n    """Read a config file; "<|file_sep|>" and '
          '<|fim_middle|> here are text."""\n    with open(path, encoding="utf-8") as f:\n'
          '        data = f.read()  # café ☕\n    return parse(')
SUFFIX = ')\n\n\ndef parse(text):\n    return dict(line.split("=", 1) for line in text.splitlines())\n'
EXTRA = [
    {"filename": "src/util.py", "text": "def helper(x):\n    return x * 2\n"},
    {"filename": "README.md", "text": "# myproject\n\nLoads configs. <|repo_name|> stays text.\n"},
]
# llama-server's defaults: -b 2048, -n -1; n_ctx is one slot's context
DEFAULT = {"n_batch": 2048, "n_predict": -1, "n_ctx": 4096, "spm_infill": False}
# small budgets, so that the prefix, suffix and extra context are all cut
TIGHT = {"n_batch": 64, "n_predict": 16, "n_ctx": 160, "spm_infill": False}

REQUESTS = [
    ("qwen2.mix.gguf", "default", {**DEFAULT}),
    ("qwen2.mix.gguf", "tight", {**TIGHT}),
    ("qwen2.mix.gguf", "spm_infill", {**DEFAULT, "spm_infill": True}),
    ("qwen2.mix.gguf", "no_extra", {**DEFAULT, "extra": []}),
    ("qwen2.mix.gguf", "ctx_2048", {**DEFAULT, "n_ctx": 2048}),
    # FIM_REP but no FIM_SEP: repo name, then snippet separators
    ("ggml-vocab-refact.gguf", "default", {**DEFAULT}),
    ("ggml-vocab-refact.gguf", "tight", {**TIGHT}),
    # no FIM_REP, no FIM_SEP
    ("ggml-vocab-starcoder.gguf", "default", {**DEFAULT}),
    ("ggml-vocab-starcoder.gguf", "tight", {**TIGHT}),
    # BOS added
    ("ggml-vocab-deepseek-coder.gguf", "default", {**DEFAULT}),
    ("ggml-vocab-deepseek-coder.gguf", "spm_infill", {**DEFAULT, "spm_infill": True}),
]


def main(driver: str, models: str):
    out = []
    for model, name, settings in REQUESTS:
        path = HERE.parent / "arch" / model if model == "qwen2.mix.gguf" else Path(models) / model
        extra = settings.pop("extra", EXTRA)
        request = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": extra,
                   "prompt": "", **settings}
        proc = subprocess.run([driver, str(path)], input=json.dumps(request), capture_output=True,
                              text=True, check=True)
        ids = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append({"model": model, "case": name, "request": request, "ids": ids})
    json.dump({"source": "llama.cpp format_prompt_infill (llama-cpp-python 0.3.36 sdist), "
                         "see tests/data/fim/README.md", "cases": out}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:3])
