"""Spec errors, kept apart from the spec model so that commands which only need to
recognise them do not import pydantic (start-up time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpecIssue:
    field: str
    message: str
    line: int | None = None


class SpecError(Exception):
    """A spec could not be used. ``issues`` lists every problem found."""

    def __init__(self, path: str, issues: list[SpecIssue], *, hint: str = "") -> None:
        self.path = path
        self.issues = issues
        self.hint = hint or "fix the spec and run `gmi-fsm spec check FILE` again"
        lines = [f"{path}: the build spec is not valid"]
        for i in issues:
            if i.line is None and not i.field:  # about the file itself, e.g. "file not found"
                lines.append(f"  {path}: {i.message}")
                continue
            where = f"{path}:{i.line}" if i.line else path
            lines.append(f"  {where}: {i.field or '(top level)'}: {i.message}")
        super().__init__("\n".join(lines))
