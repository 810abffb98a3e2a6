// multimodal entry points llama-server links from libmtmd; /infill on text never calls them
#include <cstdlib>
extern "C" void mtmd_bitmap_free() { std::abort(); }
extern "C" void mtmd_helper_bitmap_init_from_buf() { std::abort(); }
extern "C" void mtmd_helper_video_free() { std::abort(); }
extern "C" void mtmd_input_chunk_copy() { std::abort(); }
extern "C" void mtmd_input_chunk_free() { std::abort(); }
extern "C" void mtmd_input_chunk_get_id() { std::abort(); }
extern "C" void mtmd_input_chunk_get_n_pos() { std::abort(); }
extern "C" void mtmd_input_chunk_get_n_tokens() { std::abort(); }
extern "C" void mtmd_input_chunk_get_placeholder() { std::abort(); }
extern "C" void mtmd_input_chunk_get_tokens_text() { std::abort(); }
extern "C" void mtmd_input_chunk_get_type() { std::abort(); }
extern "C" void mtmd_input_chunk_load() { std::abort(); }
extern "C" void mtmd_input_chunk_save() { std::abort(); }
extern "C" void mtmd_input_chunks_free() { std::abort(); }
extern "C" void mtmd_input_chunks_get() { std::abort(); }
extern "C" void mtmd_input_chunks_init() { std::abort(); }
extern "C" void mtmd_input_chunks_size() { std::abort(); }
extern "C" void mtmd_tokenize() { std::abort(); }
