"""Errors of a request the build's state does not allow. Kept apart from
``orchestrator.builds`` so the CLI can recognise them without importing the machine."""

from __future__ import annotations


class BuildStateError(Exception):
    """The build is not in a state that allows what was asked (the CLI's exit code
    depends on the subclass)."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class NotPausedError(BuildStateError):
    """A decision for a build that is not paused."""


class BuildEndedError(BuildStateError):
    """The build has already succeeded or been aborted."""
