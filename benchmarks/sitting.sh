#!/usr/bin/env bash
# One sitting of the issue 13/14 benchmarks, side by side with llama.cpp, as docs/benchmarks.md
# reports them. Usage: benchmarks/sitting.sh LOGDIR [full]
#   PEER: the llama.cpp peer's python (default: the tests' peer venv, `python tests/llama_cpp_peer.py install`)
#   B: the folder of shaped files (`python benchmarks/make_7b.py ...`, see docs/benchmarks.md)
# "full" adds the shaped files, the context and batching scripts.
set -u
cd "$(dirname "$0")/.."
out=${1:?LOGDIR}; mkdir -p "$out"
PEER=${PEER:-$HOME/.cache/localai-test/llamacpp-0.3.36/bin/python}
B=${B:-/work/cache/bench-models}
run() { local name=$1; shift; echo "== $(date -u +%H:%M:%S) $name: $*" | tee -a "$out/index"; "$@" > "$out/$name.log" 2>&1; tail -n 25 "$out/$name.log" >> "$out/index"; }
run small python benchmarks/peer.py --peer-python "$PEER" smollm2 gemma3-270m --repeats 3
run busy python benchmarks/peer.py --peer-python "$PEER" --busy-core 1 smollm2 --repeats 2
[ "${2:-}" = full ] || exit 0
for f in qwen2.5-1.5b-shape.Q4_K_M llama-3.2-3b-shape.Q4_K_M llama-7b-shape.Q4_0; do
  run "$f" python benchmarks/peer.py --peer-python "$PEER" "$B/$f.gguf" --ttft-prompt 0 --repeats 2
done
run streams-smollm2 python benchmarks/batching.py streams --model smollm2 --tokens 128 --ns 1 8 16 --repeats 2
run streams-gemma python benchmarks/batching.py streams --model gemma3-270m --tokens 128 --ns 1 8 --repeats 2
run rewrite-smollm2 python benchmarks/batching.py rewrite --model smollm2 --tokens 1500 --repeats 2
run rewrite-gemma python benchmarks/batching.py rewrite --model gemma3-270m --base --tokens 1400 --repeats 2
run alone python benchmarks/batching.py alone --model smollm2 --tokens 128 --repeats 4
run editor python benchmarks/batching.py editor --model smollm2 --chats 8 --repeats 3
