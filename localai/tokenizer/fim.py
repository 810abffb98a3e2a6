"""Fill-in-the-middle prompts, token for token as llama-server's POST /infill builds them
(llama.cpp tools/server/server-common.cpp, `format_prompt_infill`).

The repo-level layout of Qwen2.5-Coder (arXiv 2409.12186), the extra chunks being other
files of the project (the editor's recently edited buffers):

    [extra, last n_extra_take tokens of:
        <|repo_name|>myproject\\n                     (when the vocabulary has FIM_REP)
        <|file_sep|>{filename}\\n{text}  per chunk    (without FIM_SEP: "\\n\\n--- snippet ---\\n\\n")
        <|file_sep|>filename\\n]                      (when it has FIM_SEP)
    [BOS when the vocabulary adds one]
    <|fim_prefix|>{last n_prefix_take prefix tokens}{prompt}
    <|fim_suffix|>{first n_suffix_take suffix tokens}
    <|fim_middle|>

With `spm_infill` the suffix part comes before the prefix part (BOS still first after the
extra context). The budgets, in tokens, are llama-server's:
    n_prefix_take = min(len(prefix), 3 * (n_batch // 4))
    n_suffix_take = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra_take  = min(len(extra), max(0, n_ctx - n_batch - 2 * n_predict))
where n_batch (server -b, default 2048) and n_predict (server -n, default -1) are the
server's settings, and n_ctx the context of one slot. Texts are tokenized without special
tokens (prefix, suffix and chunks are content); `prompt` with them, as /infill does.
"""
from __future__ import annotations

# llama-server's fixed strings: the project name is not an input yet, nor is the current
# file's name
REPO_NAME = "myproject\n"
CURRENT_FILE = "filename\n"
DEFAULT_FILENAME = "tmp"
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"

N_BATCH = 2048   # llama-server's default -b
N_PREDICT = -1   # llama-server's default -n (no limit)


def has_fim(tok) -> bool:
    """Whether the vocabulary has the prefix, suffix and middle tokens /infill needs."""
    return all(k in tok.fim for k in ("prefix", "suffix", "middle"))


def infill_prompt(tok, prefix: str, suffix: str, extra=None, *, n_ctx: int,
                  n_batch: int = N_BATCH, n_predict: int = N_PREDICT, spm_infill: bool = False,
                  prompt: str = "") -> list[int]:
    """Token ids of llama-server's /infill prompt for `tok` (a localai Tokenizer with FIM
    tokens, see `has_fim`). extra: a list of {"text": str, "filename": str (optional)}
    chunks, oldest first. Raises ValueError when the vocabulary has no FIM tokens or a chunk
    has no text."""
    if not has_fim(tok):
        raise ValueError("the vocabulary has no FIM prefix/suffix/middle tokens")
    fim = tok.fim

    def text_ids(text: str, special: bool = False) -> list[int]:
        return tok.encode(text, add_bos=False, add_eos=False, special=special)

    tokens_prefix, tokens_suffix = text_ids(prefix), text_ids(suffix)
    tokens_prompt = text_ids(prompt, special=True)

    extra_tokens: list[int] = []
    if "rep" in fim:
        extra_tokens += [fim["rep"], *text_ids(REPO_NAME)]
    for chunk in extra or ():
        text = chunk.get("text") if isinstance(chunk, dict) else None
        if not isinstance(text, str):
            raise ValueError("each extra chunk needs a string 'text'")
        filename = chunk.get("filename")
        if not isinstance(filename, str):      # absent, null or not a string: llama's default
            filename = DEFAULT_FILENAME
        if "sep" in fim:
            extra_tokens += [fim["sep"], *text_ids(filename + "\n")]
        else:
            extra_tokens += text_ids(SNIPPET_SEPARATOR)
        extra_tokens += text_ids(text)
    if "sep" in fim:
        extra_tokens += [fim["sep"], *text_ids(CURRENT_FILE)]

    n_prefix_take = min(len(tokens_prefix), 3 * (n_batch // 4))
    n_suffix_take = min(len(tokens_suffix), max(0, n_batch // 4 - (2 + len(tokens_prompt))))
    n_extra_take = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra_tokens))

    head = [fim["prefix"], *tokens_prefix[len(tokens_prefix) - n_prefix_take:], *tokens_prompt]
    tail = [fim["suffix"], *tokens_suffix[:n_suffix_take]]
    first, second = (tail, head) if spm_infill else (head, tail)
    bos = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
    kept_extra = extra_tokens[len(extra_tokens) - n_extra_take:]
    return [*kept_extra, *bos, *first, *second, fim["middle"]]
