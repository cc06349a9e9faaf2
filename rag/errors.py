"""The one error family whose messages are meant for the user: one line, saying what and how to fix it."""

from __future__ import annotations


class NookError(Exception):
    """An error that is safe and useful to show the user as a single line.

    Anything else that escapes is a bug and should crash loudly in tests.
    """

    exit_code = 1

    def __str__(self) -> str:
        # One line, whatever the message was built from.
        return " ".join(super().__str__().split())


class SettingsError(NookError):
    """The configuration (nook.toml, NOOK_* variables or flags) is invalid."""

    exit_code = 2


class EmbeddingModelMismatch(NookError):
    """A collection was built with another embedding model than the one configured."""

    exit_code = 2


class StoreError(NookError):
    """The vector store (embedded Chroma or a Chroma server) cannot be used."""


class DocumentError(NookError):
    """One document could not be read; the message says which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BackendError(NookError):
    """The configured LLM backend cannot be used (server down, model missing, package missing)."""
