"""llama.cpp's logits (llama-cpp-python) scored with llama-perplexity's method."""
import sys, math, json, numpy as np
from llama_cpp import Llama
path, fn, n_ctx, n_chunks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, n_threads=2)
text = open(fn, encoding="utf-8").read()
toks = llm.tokenize(text.encode(), add_bos=True, special=False)
add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else None
print("n_tokens", len(toks), "add_bos", add_bos, file=sys.stderr)
n = min(len(toks) // n_ctx, n_chunks); first = n_ctx // 2
nll = nll2 = 0.0; cnt = 0; run = []
for c in range(n):
    ids = toks[c*n_ctx:(c+1)*n_ctx]
    if add_bos: ids[0] = llm.token_bos()
    llm.reset(); llm.eval(ids)
    lg = np.array(llm.scores[first:n_ctx-1], dtype=np.float64)
    lg -= lg.max(1, keepdims=True); lg -= np.log(np.exp(lg).sum(1, keepdims=True))
    v = -lg[np.arange(len(lg)), ids[first+1:]]
    nll += v.sum(); nll2 += (v*v).sum(); cnt += len(v); run.append(math.exp(nll/cnt))
m = nll/cnt; ppl = math.exp(m); err = ppl*math.sqrt((nll2/cnt - m*m)/(cnt-1))
print(json.dumps({"ppl": ppl, "ppl_error": err, "chunk_ppl": run, "n_tokens": len(toks)}))
