// Prints what llama.cpp's vocabulary loader decides for a GGUF: EOG ids (llama_vocab_is_eog),
// FIM ids (llama_vocab_fim_*), BOS/EOS and add_bos, as JSON.
#include "llama.h"
#include <cstdio>
int main(int argc, char ** argv) {
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * m = llama_model_load_from_file(argv[1], mp);
    if (!m) return 1;
    const llama_vocab * v = llama_model_get_vocab(m);
    printf("{\"eog\": [");
    bool first = true;
    for (int i = 0; i < llama_vocab_n_tokens(v); i++) {
        if (llama_vocab_is_eog(v, i)) { printf(first ? "%d" : ", %d", i); first = false; }
    }
    printf("], \"fim\": {\"prefix\": %d, \"suffix\": %d, \"middle\": %d, \"pad\": %d, \"rep\": %d, \"sep\": %d}, "
           "\"bos\": %d, \"eos\": %d, \"add_bos\": %s}\n",
           llama_vocab_fim_pre(v), llama_vocab_fim_suf(v), llama_vocab_fim_mid(v), llama_vocab_fim_pad(v),
           llama_vocab_fim_rep(v), llama_vocab_fim_sep(v), llama_vocab_bos(v), llama_vocab_eos(v),
           llama_vocab_get_add_bos(v) ? "true" : "false");
    llama_model_free(m);
}
