"""What a check found: its kind, where, and what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["parse", "ps51", "binding", "output"]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    line: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.kind}] {self.message}"
