"""Errors of the event log. Each says what happened, where, and how to fix it."""

from __future__ import annotations


class StoreError(Exception):
    """The event store cannot be opened or written (locked, read-only, corrupt)."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ConcurrencyError(StoreError):
    """Another runner appended to this build first (the unique ``(build_id, seq)``
    constraint refused our row). Nothing of ours was written."""


class UnknownBuildError(StoreError):
    """No event exists for this build id."""


class DiskFullError(StoreError):
    """The filesystem holding the database is full (SQLITE_FULL). The transaction was
    rolled back whole: nothing of it was written."""


class CorruptStreamError(Exception):
    """A build's events are not a legal sentence of the stage machine.

    ``seq`` is the first offending event.
    """

    def __init__(self, build_id: str, seq: int, reason: str) -> None:
        super().__init__(f"build {build_id}: event seq {seq} is not a legal move: {reason}")
        self.build_id = build_id
        self.seq = seq
        self.reason = reason


class TamperedError(Exception):
    """A build's event log fails verification (its hash chain, its recorded head, its
    stored outputs, or a record of a later head). ``seq`` is the first bad one."""

    def __init__(self, build_id: str, seq: int, reason: str) -> None:
        super().__init__(f"build {build_id}: the event log fails verification at seq {seq}: {reason}")
        self.build_id = build_id
        self.seq = seq
        self.reason = reason
