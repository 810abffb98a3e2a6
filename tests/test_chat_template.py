"""Chat templates: the real models' prompts from the reference data, llama.cpp's built-ins
(expected strings from llama.cpp's tests/test-chat-template.cpp), and Jinja's edge cases."""
from __future__ import annotations

import pytest
from conftest import reference

from localai.chat_template import BUILTINS, builtin_template_name, render
from localai.errors import InvalidRequest

# llama.cpp's test conversation
CHAT = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]

EXPECTED = {
    "chatml": "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
              "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
              "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question"
              "<|im_end|>\n<|im_start|>assistant\n",
    "llama2": "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>"
              "[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]",
    "gemma": "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\n"
             "Hi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\n"
             "I am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n"
             "<start_of_turn>model\n",
    "llama3": "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant"
              "<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you"
              "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "zephyr": "<|system|>\nYou are a helpful assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
              "<|assistant|>\nHi there<|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n"
              "<|assistant|>\n   I am an assistant   <|endoftext|>\n<|user|>\nAnother question<|endoftext|>\n"
              "<|assistant|>\n",
    "alpaca": "You are a helpful assistant\n\n### Instruction:\nHello\n\n### Response:\nHi there\n\n"
              "### Instruction:\nWho are you\n\n### Response:\n   I am an assistant   \n\n"
              "### Instruction:\nAnother question\n\n### Response:\n",
}


def chat_items(model):
    return [it for it in reference(model, "greedy")["items"] if it["kind"] == "chat"]


def special(meta, key):
    return meta["tokenizer.ggml.tokens"][meta[f"tokenizer.ggml.{key}_token_id"]]


# --- the reference models --------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_meta(smollm2_path):
    from localai.gguf_file import GGUFFile

    return GGUFFile(smollm2_path).metadata


@pytest.fixture(scope="module")
def gemma3_meta(gemma3_path):
    from localai.gguf_file import GGUFFile

    return GGUFFile(gemma3_path).metadata


def test_smollm2_jinja_template_matches_reference(smollm2_meta):
    items = chat_items("smollm2")
    assert items
    for it in items:
        text = render(it["messages"], template=smollm2_meta["tokenizer.chat_template"],
                      bos_token=special(smollm2_meta, "bos"), eos_token=special(smollm2_meta, "eos"),
                      arch=smollm2_meta["general.architecture"])
        assert text == it["prompt_text"]


def test_smollm2_chatml_builtin_matches_llama_cpp():
    for it in chat_items("smollm2"):
        for name, want in it.get("alt_renderings", {}).items():
            assert "chatml" in name
            assert render(it["messages"], template="chatml", bos_token="", eos_token="") == want


def test_gemma3_has_no_template_and_falls_back_to_gemma(gemma3_meta):
    template, arch = gemma3_meta.get("tokenizer.chat_template"), gemma3_meta["general.architecture"]
    assert template is None
    assert builtin_template_name(template, arch) == "gemma"
    for it in chat_items("gemma3"):
        assert render(it["messages"], template=template, bos_token="<bos>", eos_token="<eos>", arch=arch) \
            == it["prompt_text"]


# --- built-ins -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtins_match_llama_cpp(name):
    assert render(CHAT, template=name, bos_token="<s>", eos_token="</s>") == EXPECTED[name]


def test_every_builtin_is_tested():
    assert set(BUILTINS) - {"llama2-sys"} == set(EXPECTED)


def test_without_generation_prompt():
    one = [{"role": "user", "content": "Hi"}]
    assert render(one, template="chatml", bos_token="", eos_token="", add_generation_prompt=False) \
        == "<|im_start|>user\nHi<|im_end|>\n"
    assert render(one, template="gemma", bos_token="", eos_token="", add_generation_prompt=False) \
        == "<start_of_turn>user\nHi<end_of_turn>\n"
    assert render(one, template="alpaca", bos_token="", eos_token="", add_generation_prompt=False).endswith(
        "### Instruction:\nHi\n\n")


def test_alpaca_default_preamble():
    text = render([{"role": "user", "content": "Name a fruit."}], template="alpaca", bos_token="", eos_token="")
    assert text == ("Below is an instruction that describes a task. Write a response that appropriately "
                    "completes the request.\n\n### Instruction:\nName a fruit.\n\n### Response:\n")


def test_gemma_system_without_a_user_turn_is_kept():
    text = render([{"role": "system", "content": "Be brief."}], template=None, bos_token="", eos_token="",
                  arch="gemma3")
    assert text == "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("template, arch, name", [
    (None, "gemma3", "gemma"), (None, "gemma2", "gemma"), (None, "gemma", "gemma"), (None, "llama", "chatml"),
    (None, None, "chatml"), ("", "gemma3", "gemma"), ("llama3", "gemma3", "llama3"),
    ("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", "llama", "chatml"),
    ("{{ '<start_of_turn>' }}", None, "gemma"), ("{{ messages }}", None, "jinja"),
])
def test_builtin_template_name(template, arch, name):
    assert builtin_template_name(template, arch) == name


# --- Jinja -----------------------------------------------------------------------------------

CHATML_JINJA = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")

# TheBloke/FusionNet_34Bx2_MoE-AWQ: whitespace control, bos_token, eos_token
LLAMA2_SYS_BOS_JINJA = (
    "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 -%}\n"
    "{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n"
    "{{- messages[idx]['content'] + ' [/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n"
    "{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n"
    "{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n"
    "{% endif %}\n{% endfor %}")

# google/gemma-7b-it: refuses a system turn
GEMMA_JINJA = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
               "{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim"
               " + '<end_of_turn>\\n' }}{% endfor %}")


def test_jinja_renders_like_hugging_face():
    assert render(CHAT, template=CHATML_JINJA, bos_token="<s>", eos_token="</s>") == EXPECTED["chatml"]
    assert render(CHAT, template=LLAMA2_SYS_BOS_JINJA, bos_token="<s>", eos_token="</s>") == (
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you "
        "[/INST]    I am an assistant    </s><s>[INST] Another question [/INST]")


def test_jinja_trim_and_lstrip_blocks():
    template = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert render(CHAT[1:4], template=template, bos_token="", eos_token="") == "[Hello]\n[Who are you]\n"


def test_jinja_tojson_keeps_unicode_and_html():
    msgs = [{"role": "user", "content": "héllo <b>&"}]
    text = render(msgs, template="{{ messages[0].content | tojson }}|{{ messages | tojson(indent=1) }}",
                  bos_token="", eos_token="")
    assert text.startswith('"héllo <b>&"|[\n {\n  "role": "user",')


def test_jinja_helpers():
    assert render(CHAT, template="{{ strftime_now('%Y') | length }}", bos_token="", eos_token="") == "4"
    loop = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role[0] }}{% endfor %}"
    assert render(CHAT[1:], template=loop, bos_token="", eos_token="") == "ua"


def test_raise_exception_is_invalid_request():
    alternate = ("{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
                 "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
                 "{{ m.content }}{% endfor %}")
    with pytest.raises(InvalidRequest, match="rejected the messages: Conversation roles must alternate"):
        render([CHAT[1], CHAT[3]], template=alternate, bos_token="", eos_token="")
    assert render(CHAT[1:3], template=alternate, bos_token="", eos_token="") == "HelloHi there"


def test_system_message_merged_where_the_template_refuses_or_drops_it():
    # llama.cpp's system_message_not_supported: joined to the next message with a newline
    assert render(CHAT[:2], template=GEMMA_JINJA, bos_token="", eos_token="") \
        == "<start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n"
    assert render(CHAT[1:2], template=GEMMA_JINJA, bos_token="", eos_token="") \
        == "<start_of_turn>user\nHello<end_of_turn>\n"
    users_only = "{% for m in messages %}{% if m.role == 'user' %}[{{ m.content }}]{% endif %}{% endfor %}"
    assert render(CHAT[:2], template=users_only, bos_token="", eos_token="") \
        == "[You are a helpful assistant\nHello]"
    # a template that writes the system message gets it unchanged
    assert render(CHAT[:2], template=CHATML_JINJA, bos_token="", eos_token="", add_generation_prompt=False) \
        == EXPECTED["chatml"][:EXPECTED["chatml"].index("<|im_start|>assistant")]


@pytest.mark.parametrize("template, words", [
    ("{% for m in messages %}", "does not parse"),                  # syntax error
    ("{{ messages[0].content.nope() }}", "failed to render"),      # undefined method
    ("{{ messages.append(1) }}", "failed to render"),              # the sandbox is immutable
    ("{{ ''.__class__.__mro__ }}", "failed to render"),            # and sandboxed
])
def test_template_errors_are_invalid_request(template, words):
    with pytest.raises(InvalidRequest, match=words):
        render(CHAT, template=template, bos_token="", eos_token="")


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "user", "content": "hi"}, "oops"], r"messages\[1\] must be an object"),
    ([{"role": "tool", "content": "hi"}], r"messages\[0\]\.role is 'tool'"),
    ([{"content": "hi"}], r"messages\[0\]\.role is None"),
    ([{"role": "user", "content": ["hi"]}], r"messages\[0\]\.content must be a string, got list"),
    ([{"role": "user"}], r"content must be a string, got NoneType"),
])
@pytest.mark.parametrize("template", [None, CHATML_JINJA])
def test_bad_messages_are_invalid_request(messages, words, template):
    with pytest.raises(InvalidRequest, match=words):
        render(messages, template=template, bos_token="", eos_token="")
