"""Every chat template llama.cpp ships (`models/templates/*.jinja` in the llama-cpp-python
sdist, fetched by tests/llama_cpp_sdist.py) renders in localai's sandbox.

Two conversations, with no tools and no thinking flags: system, user, assistant, user with a
generation prompt; and the same with a final assistant message to continue (rendered
without a generation prompt, which is what continuing renders). Templates that refuse or
ignore a system message get it merged into the next message (llama.cpp's
system_message_not_supported); see localai/chat_template.py for the other conventions.
"""
from __future__ import annotations

import pytest

from localai.chat_template import _supports_system, render

SYSTEM, HELLO, HI, WHO, CONT = ("You are a terse assistant.", "Hello there", "Hi, how can I help",
                                "Who are you?", "I am a model that")
CHAT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": HELLO},
        {"role": "assistant", "content": HI}, {"role": "user", "content": WHO}]
CONTINUE = CHAT + [{"role": "assistant", "content": CONT}]
# writes the system message only together with the last message when that is the user's:
# a conversation ending with the assistant's message has no system text (as in HF and llama.cpp)
SYSTEM_WITH_LAST_USER_TURN = {"mistralai-Mistral-Nemo-Instruct-2407.jinja"}


def _templates(models):
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted((models / "templates").glob("*.jinja"))}
    assert len(found) >= 70, f"only {len(found)} templates in {models / 'templates'}"
    return found


@pytest.fixture(scope="module")
def templates(llama_cpp_models):
    return _templates(llama_cpp_models)


@pytest.mark.parametrize("messages, add_generation_prompt", [(CHAT, True), (CONTINUE, False)],
                         ids=["system-user-assistant-user", "continue-final-assistant"])
def test_every_llama_cpp_template_renders(templates, messages, add_generation_prompt):
    failed = []
    for name, source in templates.items():
        try:
            text = render(messages, template=source, bos_token="<s>", eos_token="</s>",
                          add_generation_prompt=add_generation_prompt)
        except Exception as e:  # noqa: BLE001 - every failure is collected and reported
            failed.append(f"{name}: {e}")
            continue
        # every message is in the prompt, the turns in order (the system message may be
        # merged, and Mistral Nemo writes it with the last user turn)
        positions = [text.find(m["content"]) for m in messages[1:]]
        system_dropped = not add_generation_prompt and name in SYSTEM_WITH_LAST_USER_TURN
        if (SYSTEM not in text) != system_dropped or -1 in positions or positions != sorted(positions):
            failed.append(f"{name}: messages missing or out of order: {positions}")
    assert not failed, f"{len(failed)}/{len(templates)} templates fail:\n" + "\n".join(failed)


def test_gemma2_refuses_system_and_gets_it_merged(templates):
    source = templates["google-gemma-2-2b-it.jinja"]
    assert not _supports_system(source)
    assert render(CHAT[:2], template=source, bos_token="<bos>", eos_token="<eos>") == (
        f"<bos><start_of_turn>user\n{SYSTEM}\n{HELLO}<end_of_turn>\n<start_of_turn>model\n")


def test_templates_that_write_the_system_message_keep_it(templates):
    kept = [name for name, source in templates.items() if _supports_system(source)]
    assert len(kept) == len(templates) - 1          # all but Gemma 2
    text = render(CHAT, template=templates["Qwen-Qwen2.5-7B-Instruct.jinja"], bos_token="",
                  eos_token="")
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{HELLO}<|im_end|>")
    assert text.endswith(f"<|im_start|>user\n{WHO}<|im_end|>\n<|im_start|>assistant\n")


def test_generation_block_renders_its_body(templates):
    # poolside Laguna wraps the assistant's turn in {% generation %} (HF assistant masks)
    text = render(CHAT, template=templates["poolside-Laguna-XS.2.jinja"], bos_token="", eos_token="")
    assert HI in text and WHO in text


def test_undefined_joined_to_text_is_empty(templates):
    # firefunction-v2 writes `... + "\n" + functions` and `datetime` without checking they
    # exist; llama.cpp's engine treats an undefined operand of + as "" and sets datetime
    text = render(CHAT, template=templates["fireworks-ai-llama-3-firefunction-v2.jinja"],
                  bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert "Available functions as JSON spec:\n\nToday is " in text
    assert text.endswith(f"{WHO}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_undefined_is_still_an_error_elsewhere():
    from localai.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="failed to render"):
        render(CHAT[1:2], template="{{ nothing + 1 }}", bos_token="", eos_token="")
    with pytest.raises(InvalidRequest, match="failed to render"):
        render(CHAT[1:2], template="{{ nothing.attribute }}", bos_token="", eos_token="")
    assert render(CHAT[1:2], template="{{ 'a' + nothing + 'b' }}{% if nothing is defined %}!{% endif %}",
                  bos_token="", eos_token="") == "ab"


def test_hugging_face_conventions():
    """What the templates above rely on: str methods, namespace, loop controls, tojson,
    strftime_now, raise_exception, trim/lstrip blocks."""
    source = (
        "{% set ns = namespace(n=0, sys='') %}\n"
        "{% for m in messages %}\n"
        "  {% if m.role == 'assistant' %}{% set ns.sys = m.content.split(',')[0] %}{% continue %}{% endif %}\n"
        "  {% if m.content.startswith('Hello') and not m.content.endswith('?') %}"
        "{{ m.content.upper()|tojson }}{% set ns.n = ns.n + 1 %}{% endif %}\n"
        "  {% if loop.index > 2 %}{% break %}{% endif %}\n"
        "{% endfor %}\n"
        "{{ ns.sys }}|{{ ns.n }}|{{ strftime_now('%Y')|length }}|{{ 'a,b'.split(',')|join('+') }}"
        "|{{ ' x '.strip() }}|{{ {'k': 'é'}|tojson }}")
    assert render(CHAT[1:], template=source, bos_token="", eos_token="") == \
        '"HELLO THERE"Hi|1|4|a+b|x|{"k": "é"}'
