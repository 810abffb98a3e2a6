// Prints the prompt token ids llama-server's POST /infill builds: it calls llama.cpp's own
// format_prompt_infill (tools/server/server-common.cpp, linked in unchanged) with the
// arguments the /infill handler passes (server-context.cpp, post_infill).
// usage: infill_ids MODEL.gguf < request.json
//   request: {"input_prefix", "input_suffix", "input_extra": [{"filename","text"}], "prompt",
//             "n_batch" (server -b, default 2048), "n_predict" (server -n, default -1),
//             "n_ctx" (the slot's context), "spm_infill" (server --spm-infill)}
#include "llama.h"
#include "common.h"
#include "server-common.h"
#include <iostream>
#include <iterator>

int main(int argc, char ** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf < request.json\n", argv[0]); return 1; }
    llama_backend_init();
    auto mparams = llama_model_default_params();
    mparams.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mparams);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::string body((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    json data = json::parse(body);
    // the /infill handler: prompt tokenized with add_special=false, parse_special=true
    llama_tokens prompt = common_tokenize(vocab, json_value(data, "prompt", std::string()), false, true);
    llama_tokens ids = format_prompt_infill(vocab, data.at("input_prefix"), data.at("input_suffix"),
        json_value(data, "input_extra", json::array()), json_value(data, "n_batch", 2048),
        json_value(data, "n_predict", -1), data.at("n_ctx").get<int>(),
        json_value(data, "spm_infill", false), prompt);
    std::cout << json(ids).dump() << std::endl;
    llama_model_free(model);
    return 0;
}
