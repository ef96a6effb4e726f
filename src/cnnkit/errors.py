"""The one error type users see: one line naming the thing and the fix."""

from __future__ import annotations


class CnnkitError(Exception):
    """A user error: bad input, missing file, unknown name.

    The CLI prints ``cnnkit: <message> (<hint>)`` on one line and exits with code 2;
    anything else escaping the CLI is a bug (exit 1).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
