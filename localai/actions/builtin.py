"""The built-in actions, defined with the same API as the user's (see docs/actions.md):
cmd, explain, rewrite, commit-message, explain-code, add-docstring, fix, write-tests, translate.

A small model follows a pattern better than a rule: prompts are short and fixed (the daemon's
prompt cache keeps their start evaluated), and post-processors make the answer usable
whatever the model added around it.
"""
from __future__ import annotations

import re

from . import ActionError, Context, action

# --- cmd: a description becomes one shell command ------------------------------------------

CMD_SYSTEM = (
    "You turn a description into one {shell} command for {os}. "
    "Reply with the command only, on one line: no explanation, no code fences, no prompt sign."
)

# A few turns of example: a small model follows a pattern better than a rule. They stay the
# same for every request, so the daemon's prompt cache keeps them evaluated.
CMD_EXAMPLES = (
    ("list the files in this directory, largest first", "ls -lS"),
    ("show the last 20 lines of app.log", "tail -n 20 app.log"),
    ("find the .py files under src changed today", "find src -name '*.py' -mtime -1"),
    ("how much disk space is free", "df -h"),
)


_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT_SIGN = re.compile(r"^(?:\$|%|❯|>>>)\s+")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_PROSE_START = re.compile(r"^(?:here|to|you|this|the|use|try|run|it|i|sure|certainly|command|answer)\b[ :,']",
                          re.I)


def _code_lines(text: str) -> list:
    """The lines of the first fenced block when there is one, else all the lines."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    if starts:
        rest = lines[starts[0] + 1:]
        end = next((i for i, line in enumerate(rest) if _FENCE.match(line)), len(rest))
        if any(line.strip() for line in rest[:end]):
            return rest[:end]
    return lines


def first_command(answer: str) -> str:
    """One command line out of a model's answer: the body of a code fence if there is one,
    without `$ ` prompt signs, comment lines and prose around it; a line ending in `\\` is
    joined with the next. '' when nothing looks like a command."""
    text = answer.strip()
    one_line = re.fullmatch(r"```(?:[a-z]+\s)?\s*([^`\n]+?)\s*```", text)  # ```ls -l``` on one line
    if one_line:
        return one_line.group(1).strip()
    lines = [line.strip() for line in _code_lines(text)]
    for i, line in enumerate(lines):
        line = _PROMPT_SIGN.sub("", line)
        if not line or line.startswith("#") or _FENCE.match(line):
            continue
        inline = _INLINE_CODE.findall(line)
        if line.startswith("`") and inline:  # `ls -l` - lists files
            return inline[0].strip()
        if line.endswith(":") or _PROSE_START.match(line):
            if inline:  # "Use `du -sh *` to ..."
                return max(inline, key=len).strip()
            continue
        parts = [line]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts[-1] = parts[-1][:-1].rstrip()
            parts.append(lines[i])
        return " ".join(p for p in parts if p).strip()
    return ""


def command_complete(answer: str) -> bool:
    """True once the complete lines of a streaming answer hold the command `first_command`
    would pick (and it does not go on on the next line)."""
    done, _, _ = answer.rpartition("\n")
    return bool(first_command(done)) and not done.rstrip().endswith("\\")



@action(help="turn a description into one shell command for this shell and OS", needs=["text"],
        output="commandline", post=first_command, enough=command_complete, temperature=0.0, max_tokens=64)
def cmd(ctx: Context) -> list:
    messages = [{"role": "system", "content": CMD_SYSTEM.format(shell=ctx.shell, os=ctx.os)}]
    for ask, answer in CMD_EXAMPLES:
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": ctx.text.strip()}]


# --- explain: what a command does ----------------------------------------------------------

EXPLAIN_SYSTEM = (
    "You explain {shell} commands on {os}. Say briefly what the command does, part by part, "
    "in at most four short sentences of plain text."
)


def _command_to_explain(ctx: Context) -> str:
    text = (ctx.text or ctx.last_command or "").strip()
    if not text:
        raise ActionError("nothing to explain: give the command (or run it first: the shell passes the previous one)")
    return text


@action(help="explain a shell command briefly (default: the previous command)", output="show",
        post=str.strip, temperature=0.0, max_tokens=160)
def explain(ctx: Context) -> list:
    return [{"role": "system", "content": EXPLAIN_SYSTEM.format(shell=ctx.shell, os=ctx.os)},
            {"role": "user", "content": f"Explain this command:\n{_command_to_explain(ctx)}"}]


# --- rewrite, fix, translate: the selection is replaced ------------------------------------
# (output "replace": the daemon drops code fences and a preamble from the answer, as the
# `rewrite` method does, before `post` sees it)

REWRITE_SYSTEM = (
    "You rewrite text as instructed. Reply with the rewritten text only: no explanation, "
    "no introduction, no quotes."
)


def _fenced(ctx: Context) -> str:
    return f"```{ctx.filetype or ''}\n{ctx.text.rstrip()}\n```"


@action(help="rewrite the selection as the instruction says", needs=["text", "instruction"], output="replace")
def rewrite(ctx: Context) -> list:
    return [{"role": "system", "content": REWRITE_SYSTEM},
            {"role": "user", "content": f"{_fenced(ctx)}\n\n{ctx.instruction.strip()}" if ctx.filetype else
             f"{ctx.instruction.strip()}\n\n{_fenced(ctx)}"}]  # code: the instruction last (handlers.rewrite_messages)


FIX_SYSTEM = ("You fix code. Reply with the corrected code only, complete, in one code block: "
              "no explanation.")


def _diagnostics(ctx: Context) -> str:
    out = []
    for d in ctx.diagnostics or []:
        where = f"line {d['line']}" if d.get("line") else "here"
        sev = f"{d['severity']}: " if d.get("severity") else ""
        out.append(f"- {where}: {sev}{str(d.get('message', '')).strip()}")
    return "\n".join(out)


@action(help="fix the selected code (the editor's diagnostics say what is wrong)", needs=["text"],
        output="replace", temperature=0.0)
def fix(ctx: Context) -> list:
    problems = _diagnostics(ctx)
    ask = "Fix this code." + (f" The editor reports:\n{problems}" if problems else "")
    return [{"role": "system", "content": FIX_SYSTEM}, {"role": "user", "content": f"{ask}\n\n{_fenced(ctx)}"},
            {"role": "assistant", "content": f"```{ctx.filetype or ''}\n"}]  # prefill: code, not prose


@action(help="translate the selection (instruction: the language, default English)", needs=["text"],
        output="replace", temperature=0.0)
def translate(ctx: Context) -> list:
    lang = (ctx.instruction or "").strip() or "English"
    return [{"role": "system", "content": f"You translate text into {lang}. Reply with the translation only."},
            {"role": "user", "content": ctx.text.strip()}]


# --- commit-message: the staged diff -------------------------------------------------------

COMMIT_SYSTEM = ("You write git commit messages. Reply with one line in the imperative mood, at most "
                 "72 characters, that says what the change does: no quotes, no explanation.")
_LABEL = re.compile(r"^(?:commit message|message|subject|summary)\s*:\s*", re.I)


def commit_line(answer: str) -> str:
    """The first line of text of an answer, without fences, quotes or a `Commit message:` label."""
    for line in answer.splitlines():
        if _FENCE.match(line):  # ```, ```text, ~~~: the fence and its language tag are not the message
            continue
        line = _LABEL.sub("", line.strip().strip("`").strip()).strip().strip("\"'").strip()
        if line:
            return line
    return ""


MAX_DIFF_CHARS = 6000  # a small model's context is short: the start of a long diff says enough


@action(help="write a one-line commit message for the staged changes (git diff --staged)",
        needs=["git_diff_staged"], output="stdout", post=commit_line, temperature=0.0, max_tokens=48)
def commit_message(ctx: Context) -> list:
    return [{"role": "system", "content": COMMIT_SYSTEM},
            {"role": "user", "content": f"```diff\n{ctx.git_diff_staged[:MAX_DIFF_CHARS]}\n```"}]


# --- code: explain it, document it, test it -------------------------------------------------

@action(help="explain what the selected code does", needs=["text"], output="show", post=str.strip, max_tokens=256)
def explain_code(ctx: Context) -> list:
    return [{"role": "system", "content": "You explain code to a programmer, briefly and precisely."},
            {"role": "user", "content": f"Explain what this code does:\n\n{_fenced(ctx)}"}]


@action(help="write unit tests for the selected code", needs=["text"], output="show", post=str.strip)
def write_tests(ctx: Context) -> list:
    framework = {"python": " with pytest", "javascript": " with jest", "typescript": " with jest",
                 "rust": " as #[test] functions", "go": " with the testing package", "lua": " with busted"}
    return [{"role": "system", "content": "You write short, focused unit tests. Reply with the test code only."},
            {"role": "user", "content": f"Write unit tests{framework.get(ctx.filetype or '', '')} for this code:"
                                        f"\n\n{_fenced(ctx)}"}]


COMMENT = {"lua": "--", "sql": "--", "haskell": "--", "c": "//", "cpp": "//", "java": "//", "javascript": "//",
           "typescript": "//", "rust": "///", "go": "//", "swift": "///", "kotlin": "//", "php": "//"}
_DEF = re.compile(r"^(\s*)(?:async\s+def|def|class)\s")
_ONE_LINER = re.compile(r"^(\s*(?:async\s+def|def|class)\s.*?(?:\)|\w)\s*(?:->\s*[^:]+)?:)[ \t]*([^\s#].*)$")


def _sentence(answer: str, code: str = "") -> str:
    """One sentence out of the model's answer: the first line of prose (not a line of the
    code it was shown), without fences, quotes or docstring marks, ending in a period."""
    seen = {x.strip() for x in code.splitlines()}
    for line in answer.splitlines():
        if line.strip() in seen:
            continue
        line = line.strip().strip("`").strip().strip('"').strip("'").strip()
        if not line or _FENCE.match(line) or line.startswith(("def ", "class ", "return ", "#", "//", "--")):
            continue
        line = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].strip()
        line = line.replace('"""', "").replace("\\", "")
        return line if line.endswith((".", "!", "?")) else line + "."
    return ""


def _signature(text: str):
    """(lines, index of the line ending the first def/class signature, body indent), or None."""
    lines = text.split("\n")
    start = next((i for i, x in enumerate(lines) if _DEF.match(x)), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(lines)) if lines[i].split("#")[0].rstrip().endswith(":")), start)
    body = next((x for x in lines[end + 1:] if x.strip()), None)
    indent = re.match(r"\s*", body).group(0) if body is not None else _DEF.match(lines[start]).group(1) + "    "
    return lines, end, indent


def insert_docstring(answer: str, ctx: Context) -> str:
    """The selection with the answer's first sentence as the docstring of its first function
    (Python: inside it, after the signature, indented as its body), or as a comment line above
    it in other languages."""
    summary = _sentence(answer, ctx.text) or "Describe what this does."
    sig = _signature(ctx.text)
    if sig is not None:
        lines, end, indent = sig
        one_line = _ONE_LINER.match(lines[end])
        if one_line:  # `def f(a): return a`: the body moves to its own line below the docstring
            indent = _DEF.match(lines[end]).group(1) + "    "
            lines[end:end + 1] = [one_line.group(1), indent + one_line.group(2)]
        return "\n".join(lines[:end + 1] + [f'{indent}"""{summary}"""'] + lines[end + 1:])
    if (ctx.filetype or "python") == "python":
        raise ActionError("add-docstring: the selection holds no `def` or `class`: select a whole function")
    lines = ctx.text.split("\n")
    indent = re.match(r"\s*", lines[0]).group(0)
    return "\n".join([f"{indent}{COMMENT.get(ctx.filetype, '#')} {summary}"] + lines)


@action(help="document the selected function (a docstring inside it)", needs=["text"], output="replace",
        post=insert_docstring, temperature=0.0, max_tokens=40, stop=['"""', "\n\n"])
def add_docstring(ctx: Context) -> list:
    messages = [{"role": "system", "content": "You write docstrings: one short sentence that says what the "
                                              "function does."},
                {"role": "user", "content": f"Write a one-sentence docstring for this function:\n\n{_fenced(ctx)}"}]
    sig = _signature(ctx.text)
    if sig is not None:  # assistant prefill: the model goes on writing the docstring itself
        lines, end, indent = sig
        messages.append({"role": "assistant", "content": "\n".join(lines[:end + 1]) + f'\n{indent}"""'})
    return messages
