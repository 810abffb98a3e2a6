"""The text `localai init <shell>` prints: plugins/shell/localai.<shell>, installed as
`localai.plugins_shell`. Imports nothing but the standard library, so `localai init` can
answer without loading the CLI framework (see localai.cli.main)."""
from __future__ import annotations

from .errors import LocalAIError

SHELLS = ("bash", "zsh", "fish")


def integration(shell: str) -> str:
    """The text of `plugins/shell/localai.<shell>` as installed with the package."""
    from importlib.resources import files

    if shell not in SHELLS:
        raise LocalAIError(f"no integration for the shell {shell!r}; shells: {', '.join(SHELLS)}")
    try:
        return files("localai.plugins_shell").joinpath(f"localai.{shell}").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # an editable install made before they existed
        raise LocalAIError("the shell integrations are missing from this installation of localai: "
                           "reinstall it (`pip install .`, or `pip install -e .` in a checkout)") from None
