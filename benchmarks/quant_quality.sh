#!/bin/bash
# The quality table of docs/quantization.md: each real model dequantized to F16 (our
# `quantize --type F16 --allow-requantize`), then each TYPE made by `localai quantize` and by
# llama-quantize from that F16 (wall time and peak RSS by /usr/bin/time), the two outputs
# compared tensor by tensor, and llama-perplexity's PPL / KLD / same-top against the F16
# (perplexity run once when the tensors are identical; REUSE_PPL=DIR takes it from an earlier
# sitting's DIR when the files are identical to llama-quantize's).
#   OUT=/work/cache/quantk-meas LLAMA_BIN=/work/cache/llama-build/bin benchmarks/quant_quality.sh "smollm2 Q8_0 Q4_K_M" ...
# then: python benchmarks/quant_table.py $OUT
set -u
M=${OUT:-/work/cache/quantk-meas}
B=${LLAMA_BIN:-/work/cache/llama-build/bin}
HERE=$(cd "$(dirname "$0")/.." && pwd)
L=$HERE/.venv/bin/localai
PY=$HERE/.venv/bin/python
TEXT=${TEXT:-$HERE/tests/data/ppl_text.txt}
export LD_LIBRARY_PATH=$B
mkdir -p "$M"
for job in "$@"; do
  set -- $job; model=$1; shift
  src=$($PY -c "import localai.store as s; print(s.resolve('$model'))")
  f16=$M/$model.F16.gguf
  [ -f $f16 ] || $L quantize $src $f16 --type F16 --allow-requantize 2>/dev/null
  [ -f $M/$model.F16.kld ] || $B/llama-perplexity -m $f16 -f $TEXT -c 512 -t 2 --kl-divergence-base $M/$model.F16.kld > $M/$model.F16.ppl.txt 2>&1
  for t in "$@"; do
    [ -f $M/$model.$t.llama.ppl.txt ] && continue
    /usr/bin/time -f "%e %M %U %S" -o $M/$model.$t.ours.time $L quantize $f16 $M/$model.$t.ours.gguf --type $t --threads 2 2>/dev/null > $M/$model.$t.ours.log
    /usr/bin/time -f "%e %M %U %S" -o $M/$model.$t.llama.time $B/llama-quantize $f16 $M/$model.$t.llama.gguf $t 2 > $M/$model.$t.llama.log 2>&1
    $PY $HERE/benchmarks/same_tensors.py $M/$model.$t.ours.gguf $M/$model.$t.llama.gguf > $M/$model.$t.same.txt
    same=$?
    if [ $same = 0 ] && [ -n "${REUSE_PPL:-}" ] && [ -f $REUSE_PPL/$model.$t.ours.ppl.txt ]; then
      # an earlier sitting measured this type's file; llama-quantize's output (which ours equals
      # byte for byte, checked just above) does not change between sittings: reuse its numbers
      cp $REUSE_PPL/$model.$t.ours.ppl.txt $M/$model.$t.ours.ppl.txt
    else
      $B/llama-perplexity -m $M/$model.$t.ours.gguf -f $TEXT -c 512 -t 2 --kl-divergence-base $M/$model.F16.kld --kl-divergence > $M/$model.$t.ours.ppl.txt 2>&1
    fi
    if [ $same = 0 ]; then cp $M/$model.$t.ours.ppl.txt $M/$model.$t.llama.ppl.txt; else
      $B/llama-perplexity -m $M/$model.$t.llama.gguf -f $TEXT -c 512 -t 2 --kl-divergence-base $M/$model.F16.kld --kl-divergence > $M/$model.$t.llama.ppl.txt 2>&1; fi
    echo "$model $t done $(date -u +%T) identical=$([ $same = 0 ] && echo yes || echo no)" >> $M/progress.txt
  done
done
