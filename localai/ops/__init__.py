"""The backend operations an architecture file is written over (llama.cpp's build_norm /
build_attn / build_ffn / build_moe_ffn, as plain functions).

Each backend is one module with the same names; an architecture file gets it as `ops` and
never imports numpy or mlx itself. Arrays are the backend's own (numpy or mx); arithmetic
between them (`x + y`, `x * 0.5`), `.reshape`, and slicing are written directly.

Shapes: L new positions, D model width, H query heads, Hkv key/value heads, hd head size.

Weights (read from the GGUF file, staying quantized):
    matrix(g, name)              a 2-D weight (M, K); `linear` multiplies by it
    vector(g, name)              a 1-D float weight (norm weights, biases), float32
    experts(g, name)             a 3-D expert weight (n_expert, M, K) for `moe`
    has(g, name)                 whether the file has the tensor

Compute:
    embed(W, tokens)             token ids (L,) -> rows of W (L, D)
    linear(x, W, b=None)         x (L, K) -> x @ W.T (+ b) (L, M)
    linears(x, Ws, bs=None)      the same x by several W (a layer's Q, K, V; gate, up) -> a tuple
                                 of linear(x, W_i, b_i); numpy: one kernel call for them all
    rms_norm(x, w, eps)          over the last axis; x (..., D), w (D,)
    layer_norm(x, w, b, eps)     over the last axis, with bias
    rope(dims, base, neox, scale=1, freq_factors=None)
                                 -> a callable rope(x (L, H, hd), offset) -> rotated copy:
                                    NORM (adjacent pairs) or NEOX (halves) over the first `dims`
    attention(q, k, v, cache, scale, window=None, softcap=None)
                                 q (L, H, hd), k/v (L, Hkv, hd) for positions cache.offset..;
                                 stores k, v in the cache and attends causally (GQA; a key at
                                 distance >= window is masked; scores soft-capped as
                                 cap * tanh(s / cap)) -> (L, H * hd)
    glu(gate, up, act)           act(gate) * up; act "silu" or "gelu_tanh"
    activation(x, act)           act(x)
    softcap(x, cap)              cap * tanh(x / cap)
    moe(x, router, gate, up, down, k, act)
                                 softmax over the router's logits, top-k experts, their weights
                                 renormalised to 1, sum of the experts' gated MLPs (L, D)
    result(logits, cache)        the step's output as float32 numpy (L, n_vocab) (MLX: the one
                                 `mx.eval` of the step, logits and caches together)
    make_cache(n_layers, n_kv_heads, head_dim, max_len)
                                 a KV cache per layer (`update_and_fetch`, `offset`, `trim`)
"""
