"""Does a suggested shell command delete or overwrite something? `localai cmd` and the shells'
suggestion key (Alt-a) show a warning line before the user can run such a command.

A table of patterns over the command line as written (no shell parsing: a suggestion is
read, not run); each names what it does. It errs towards warning. Standard library only.
"""
from __future__ import annotations

import re

_W = r"(?:^|[;&|({`]\s*|\$\(\s*|\b(?:sudo|doas|xargs|exec|time|nice|command|env)\s+(?:-\S+\s+)*)"  # a command's start

# pattern -> what the command does (the first match is the warning)
DANGERS = (
    (_W + r"rm\s+(?:\S+\s+)*?(?:-[a-zA-Z]*[rRf]|--recursive|--force)", "deletes files recursively or by force (rm -r/-f)"),
    (_W + r"rm(?:\s|$)", "deletes files (rm)"),
    (_W + r"(?:rmdir|unlink|shred|wipefs)\b", "deletes or destroys data"),
    (_W + r"dd\s+.*\bof=", "overwrites a file or disk (dd of=)"),
    (_W + r"mkfs(?:\.\w+)?\b|\bmke2fs\b|\bmkswap\b", "formats a disk (mkfs)"),
    (_W + r"(?:fdisk|sfdisk|parted|gdisk)\b", "changes a disk's partitions"),
    (_W + r"(?:chmod|chown|chgrp)\s+(?:\S+\s+)*?(?:-[a-zA-Z]*R|--recursive)", "changes permissions or owners recursively"),
    (_W + r"find\s.*(?:-delete\b|-exec\s+(?:rm|shred|mv)\b)", "deletes the files it finds"),
    (_W + r"truncate\b", "truncates files"),
    (_W + r"mv\s", "moves files, overwriting any at the destination (mv)"),
    (_W + r"git\s+(?:reset\s+--hard|clean\s+-[a-zA-Z]*f|push\s+(?:\S+\s+)*?(?:-f|--force))", "discards work in git"),
    (r"(?<![<>&0-9])>(?![>&])\s*(?!/dev/null\b)[^\s|&;]", "overwrites a file (> FILE)"),
    (r"\|\s*(?:sudo\s+)?(?:sh|bash|zsh|fish)\b", "runs downloaded or generated code in a shell"),
    (r":\(\)\s*\{", "a fork bomb"),
)
_COMPILED = tuple((re.compile(p), why) for p, why in DANGERS)


def danger(command: str) -> str | None:
    """What the command may destroy, in a few words, or None when no pattern matches."""
    for pattern, why in _COMPILED:
        if pattern.search(command):
            return why
    return None


def warning(command: str) -> str | None:
    """The line shown before the user can run the command, or None."""
    why = danger(command)
    return f"localai: warning: this command {why}: read it before you press Enter" if why else None
