"""Error types with messages a person can act on.

Every error the engine raises for bad input derives from `LocalAIError`; the CLI prints
its message (no traceback) and exits non-zero, the daemon sends it as an `error` event
with `code`.
"""
from __future__ import annotations


class LocalAIError(Exception):
    code = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ModelNotFound(LocalAIError):
    code = "model_not_found"


class ModelFileError(LocalAIError):
    """Truncated, corrupt or otherwise unreadable model file."""
    code = "bad_model_file"


class UnsupportedModel(LocalAIError):
    """An architecture, quant type or tokenizer that localai does not run."""
    code = "unsupported_model"


class ContextOverflow(LocalAIError):
    code = "context_overflow"


class InvalidRequest(LocalAIError):
    code = "invalid_request"


class DownloadError(LocalAIError):
    code = "download_failed"
