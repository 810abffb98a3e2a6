"""The shell integrations, one file per shell, shipped with the package: `localai init <shell>`
prints them (see localai/cli/shell_cmds.py)."""
