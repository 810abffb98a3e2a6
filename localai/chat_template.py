"""Chat messages -> prompt text.

A GGUF's `tokenizer.chat_template` is Jinja and is rendered the way Hugging Face's
`apply_chat_template` renders it (sandboxed, trim_blocks + lstrip_blocks, `raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII). Files without one fall back to a built-in
template picked by architecture (chatml when the table has no entry); the built-ins write
exactly what llama.cpp's `llama_chat_apply_template` writes for the same name. `template`
may also be a built-in's name, so a user can override a file's template.

The text never starts with BOS: the tokenizer adds it.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Callable

from .errors import InvalidRequest

ROLES = ("system", "user", "assistant")

DEFAULT_SYSTEM_ALPACA = ("Below is an instruction that describes a task. "
                         "Write a response that appropriately completes the request.")


# --- built-in templates: fn(messages, add_generation_prompt) -> str -------------------------

def _chatml(messages: list[dict], add_generation_prompt: bool) -> str:
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _llama2(messages: list[dict], add_generation_prompt: bool) -> str:
    # Meta's format, which llama.cpp calls "llama2-sys" (its bare "llama2" drops <<SYS>>).
    # The generation prompt is implicit: a user turn already ends with [/INST].
    out, inside_turn = "[INST] ", True
    for m in messages:
        if not inside_turn:
            out, inside_turn = out + "[INST] ", True
        if m["role"] == "system":
            out += f"<<SYS>>\n{m['content']}\n<</SYS>>\n\n"
        elif m["role"] == "user":
            out += f"{m['content']} [/INST]"
        else:
            out, inside_turn = out + f"{m['content']}</s>", False
    return out


def _alpaca(messages: list[dict], add_generation_prompt: bool) -> str:
    # alpaca.cpp's preamble, replaced by a system message when there is one.
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = (system or DEFAULT_SYSTEM_ALPACA) + "\n\n"
    for m in messages:
        if m["role"] == "user":
            out += f"### Instruction:\n{m['content']}\n\n### Response:\n"
        elif m["role"] == "assistant":
            out += f"{m['content']}\n\n"
    # Without a generation prompt the text ends after the last complete block.
    if not add_generation_prompt and out.endswith("### Response:\n"):
        out = out[: -len("### Response:\n")]
    return out


def _gemma(messages: list[dict], add_generation_prompt: bool) -> str:
    # Gemma has no system turn: llama.cpp merges it into the next user turn. A system
    # message with no user turn after it becomes a user turn rather than vanishing.
    out, system = "", []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"].strip())
            continue
        role = "model" if m["role"] == "assistant" else m["role"]
        out += f"<start_of_turn>{role}\n"
        if system and role != "model":
            out += "\n\n".join(system) + "\n\n"
            system = []
        out += f"{m['content'].strip()}<end_of_turn>\n"
    if system:
        out += "<start_of_turn>user\n" + "\n\n".join(system) + "<end_of_turn>\n"
    return out + ("<start_of_turn>model\n" if add_generation_prompt else "")


def _llama3(messages: list[dict], add_generation_prompt: bool) -> str:
    out = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
                  for m in messages)
    return out + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")


def _zephyr(messages: list[dict], add_generation_prompt: bool) -> str:
    out = "".join(f"<|{m['role']}|>\n{m['content']}<|endoftext|>\n" for m in messages)
    return out + ("<|assistant|>\n" if add_generation_prompt else "")


BUILTINS: dict[str, Callable[[list[dict], bool], str]] = {
    "chatml": _chatml,
    "llama2": _llama2,
    "llama2-sys": _llama2,
    "alpaca": _alpaca,
    "gemma": _gemma,
    "llama3": _llama3,
    "zephyr": _zephyr,
}

DEFAULT_BUILTIN = "chatml"

# general.architecture -> built-in, for files that carry no chat template
BY_ARCH = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
}

# marker in a Jinja template -> the built-in family it belongs to (as llama.cpp's
# llm_chat_detect_template); first match wins, so the more specific markers come first
DETECT = (
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|im_start|>", "chatml"),
    ("<|assistant|>", "zephyr"),
    ("[INST]", "llama2"),
    ("### Instruction:", "alpaca"),
)


def builtin_template_name(template: str | None, arch: str | None) -> str:
    """The built-in that stands for this template: `template` itself when it names one,
    the architecture's fallback (else chatml) when there is no template, and for Jinja
    source the family its markers show, or "jinja" when none does. `render` still renders
    Jinja source with Jinja; the name is for display and for choosing stop strings."""
    if not template:
        return BY_ARCH.get(arch or "", DEFAULT_BUILTIN)
    if template in BUILTINS:
        return template
    return next((name for marker, name in DETECT if marker in template), "jinja")


# --- Jinja ---------------------------------------------------------------------------------
#
# The environment is Hugging Face's (`apply_chat_template`): sandboxed, trim_blocks +
# lstrip_blocks, the loopcontrols extension, `raise_exception`, `strftime_now`, a `tojson`
# that keeps non-ASCII, the `{% generation %}` block of assistant-mask templates. Python's
# str and dict methods (`.startswith`, `.split`, `.items`, ...) and `namespace` are Jinja's
# own. Where llama.cpp's template engine is more lenient and templates rely on it, we follow
# llama.cpp: an undefined variable joined to a string counts as "" (a template may use
# `functions` or `tools` we do not pass), and `datetime` / `date_string` are set, as in
# common_chat_extra_context. A template that rejects or ignores a system message gets it
# merged into the next message, as llama.cpp's system_message_not_supported does.

def _raise_exception(message):
    raise InvalidRequest(f"the model's chat template rejected the messages: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Hugging Face's override: Jinja's own tojson escapes HTML characters.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _extra_context() -> dict:
    """What llama.cpp gives every template besides the messages (common_chat_extra_context)."""
    now = datetime.now()
    return {"datetime": now.strftime("%b %d %Y"), "date_string": now.strftime("%d %b %Y")}


@lru_cache(maxsize=1)
def _environment():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Undefined(jinja2.Undefined):
        """Jinja's Undefined, except that `undefined + "text"` is "text" (llama.cpp's engine)."""

        def __add__(self, other):
            return other if isinstance(other, str) else jinja2.Undefined.__add__(self, other)

        def __radd__(self, other):
            return other if isinstance(other, str) else jinja2.Undefined.__radd__(self, other)

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's text for training
        masks (Hugging Face's AssistantTracker); rendering just writes its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        @staticmethod
        def _body(caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=Undefined,
                                        extensions=[loopcontrols, Generation])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def _compile(source: str):
    import jinja2

    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidRequest(f"the model's chat template does not parse (line {e.lineno}: {e.message}); "
                             f"pass a built-in template instead: {', '.join(BUILTINS)}") from None


def _render_compiled(template, messages: list[dict], variables: dict) -> str:
    import jinja2

    try:
        return template.render({**_extra_context(), **variables, "messages": messages})
    except jinja2.TemplateError as e:
        raise InvalidRequest(f"the model's chat template failed to render ({type(e).__name__}: {e}); "
                             f"pass a built-in template instead: {', '.join(BUILTINS)}") from None


_SYSTEM_PROBE = "\ue000system probe\ue001"


@lru_cache(maxsize=16)
def _supports_system(source: str) -> bool:
    """Whether the template writes a system message: rendered with [system, user], it must
    neither raise nor leave the system text out (llama.cpp's supports_system_role probe)."""
    probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "Hello"}]
    try:
        out = _render_compiled(_compile(source), probe, {"add_generation_prompt": True,
                                                         "bos_token": "", "eos_token": ""})
    except InvalidRequest:
        return False
    return _SYSTEM_PROBE in out


def merge_system(messages: list[dict]) -> list[dict]:
    """A leading system message joined to the next message's content with a newline (or
    dropped when it is alone), as llama.cpp's system_message_not_supported."""
    if not messages or messages[0]["role"] != "system":
        return messages
    if len(messages) == 1:
        return []
    first = dict(messages[1], content=messages[0]["content"] + "\n" + messages[1]["content"])
    return [first, *messages[2:]]


def _render_jinja(source: str, messages: list[dict], **variables) -> str:
    template = _compile(source)
    if messages and messages[0]["role"] == "system" and not _supports_system(source):
        messages = merge_system(messages)
    return _render_compiled(template, messages, variables)


# --- public API ----------------------------------------------------------------------------

def validate_messages(messages) -> list[dict]:
    """Check the shape of a chat: a non-empty list of {role, content: str} dicts with role
    one of ROLES (other keys pass through). Raises `InvalidRequest`."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with role and content, got {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise InvalidRequest(f"messages[{i}].role is {m.get('role')!r}; it must be one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise InvalidRequest(f"messages[{i}].content must be a string, got {type(m.get('content')).__name__}")
    return messages


def render(messages: list[dict], *, template: str | None, bos_token: str, eos_token: str,
           add_generation_prompt: bool = True, arch: str | None = None) -> str:
    """Render `messages` to prompt text.

    template: the GGUF's `tokenizer.chat_template` (Jinja source), a name in BUILTINS, or
    None (or "") for the architecture's fallback. bos_token / eos_token are the token texts, given
    to Jinja templates that write them. Bad messages and template failures raise
    `InvalidRequest`.
    """
    validate_messages(messages)
    if template and template not in BUILTINS:
        return _render_jinja(template, messages, add_generation_prompt=add_generation_prompt,
                             bos_token=bos_token, eos_token=eos_token)
    return BUILTINS[builtin_template_name(template, arch)](messages, add_generation_prompt)


# --- content apart from markup -------------------------------------------------------------

# Each message's strings are replaced by a placeholder the template cannot know: private-use
# characters around a random number, which trim, strip, upper and lower all leave alone.
_PLACEHOLDER = "\ue000{nonce}.{k}\ue001"


def render_parts(messages: list[dict], *, template: str | None, bos_token: str, eos_token: str,
                 add_generation_prompt: bool = True, arch: str | None = None) -> list[tuple[str, bool]]:
    """Render `messages` as `render` does, as [(text, is_markup)] parts: the template's own
    text (is_markup True: it may hold control tokens) apart from the messages' strings
    (False: content, always plain text). The texts join to `render(...)`'s prompt.

    The template is rendered twice, with the real strings and with a placeholder for each;
    the placeholder render gives the markup, and each placeholder is filled with its string
    as the template wrote it (as is, or stripped: templates trim content). A template that
    changes content in another way gets it as is, next to markup taken only from the
    placeholder render, so content never becomes markup.

    A conversation whose last message is the assistant's is continued ("assistant prefill",
    as llama.cpp and OpenAI-style APIs do) when `add_generation_prompt`: rendered without a
    generation prompt and cut right after that message's content, so the template's
    end-of-turn is not written. Raises `InvalidRequest` as `render` does, and when the
    template mangles content or does not end with the final assistant message.
    """
    import re
    import secrets

    validate_messages(messages)
    prefill = add_generation_prompt and messages[-1]["role"] == "assistant"
    opts = dict(template=template, bos_token=bos_token, eos_token=eos_token,
                add_generation_prompt=add_generation_prompt and not prefill, arch=arch)
    nonce = str(secrets.randbelow(10 ** 12))
    strings: list[str] = []
    marked, last_content = [], None
    for m in messages:
        mm = dict(m)
        for key, value in m.items():
            # "" holds no control text and keeps `{% if content %}` true to the real chat;
            # the content to continue needs its place marked even when empty
            if key != "role" and isinstance(value, str) and (value or prefill and m is messages[-1]):
                if key == "content":
                    last_content = len(strings)
                mm[key] = _PLACEHOLDER.format(nonce=nonce, k=len(strings))
                strings.append(value)
        marked.append(mm)
    real = render(messages, **opts)
    pieces = re.split(re.escape(_PLACEHOLDER.format(nonce=nonce, k="@")).replace("@", r"(\d+)"),
                      render(marked, **opts))
    markup, slots = pieces[0::2], [int(k) for k in pieces[1::2]]
    if any("\ue000" in t or "\ue001" in t for t in markup):  # a placeholder cut or changed
        raise InvalidRequest("the model's chat template changes message content in a way that cannot be "
                             f"kept apart from its markup; pass a built-in template instead: {', '.join(BUILTINS)}")
    filled = _align(real, markup, [strings[k] for k in slots]) or [strings[k] for k in slots]
    parts = [(markup[0], True)]
    for text, t in zip(filled, markup[1:]):
        parts += [(text, False), (t, True)]
    if prefill:
        if slots[-1:] != [last_content]:
            raise InvalidRequest("cannot continue the final assistant message: the chat template does not "
                                 "end with it")
        parts = parts[:-1]  # the end-of-turn (and whatever else) after the final content
    return [(t, is_markup) for t, is_markup in parts if t]


def _align(real: str, markup: list[str], strings: list[str]) -> list[str] | None:
    """The strings as the template wrote them into `real` between the `markup` pieces (each
    as is or stripped on one or both sides), or None when no choice rebuilds `real`.
    A depth-first search over those choices, without recursion (chats can be long)."""
    if not real.startswith(markup[0]):
        return None
    failed: set = set()
    frames = [[len(markup[0]), 0, None]]  # per string: [position in real, next choice, chosen]
    while frames:
        i = len(frames) - 1
        pos, j, _ = frames[-1]
        if i == len(strings):
            if pos == len(real):
                return [f[2] for f in frames[:-1]]
            frames.pop()
            continue
        s = strings[i]
        choices = list(dict.fromkeys((s, s.strip(), s.lstrip(), s.rstrip())))
        if j >= len(choices) or (i, pos) in failed:
            failed.add((i, pos))
            frames.pop()
            continue
        frames[-1][1] = j + 1
        c = choices[j]
        if real.startswith(c, pos) and real.startswith(markup[i + 1], pos + len(c)):
            frames[-1][2] = c
            frames.append([pos + len(c) + len(markup[i + 1]), 0, None])
    return None
