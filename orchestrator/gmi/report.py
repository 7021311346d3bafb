"""A validation report: named checks, each passed, failed or skipped, with evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from orchestrator.gmi.naming import HYPERV_EXPORT, Variant

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    evidence: str

    @property
    def ok(self) -> bool:
        # A skipped check is not a failure: its evidence says why it could not run.
        return self.status != "fail"


def passed(name: str, evidence: str) -> Check:
    return Check(name, "pass", evidence)


def failed(name: str, evidence: str) -> Check:
    return Check(name, "fail", evidence)


def skipped(name: str, evidence: str) -> Check:
    return Check(name, "skip", evidence)


def check(name: str, ok: bool, good: str, bad: str) -> Check:
    return passed(name, good) if ok else failed(name, bad)


@dataclass(slots=True)
class Report:
    path: str
    checks: list[Check] = field(default_factory=list)
    inspect_unavailable: bool = False
    variant: Variant = HYPERV_EXPORT

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def importable(self) -> bool:
        """vmgenie's ``genie gmi import`` would take it: valid, and a full Hyper-V
        export (a disk-only GMI must first be finished on a Hyper-V host)."""
        return self.ok and self.variant == HYPERV_EXPORT

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def only_inspect_unavailable(self) -> bool:
        """Every failure is "--inspect could not run": the package itself passed."""
        names = {c.name for c in self.failures}
        return names == {"inspect.available"}

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "variant": self.variant,
            "importable_by_vmgenie": self.importable,
            "inspect_unavailable": self.inspect_unavailable,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
        }

    def to_text(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        lines = [f"{c.status.upper():4}  {c.name:{width}}  {c.evidence}" for c in self.checks]
        verdict = "valid" if self.ok else f"NOT valid: {len(self.failures)} check(s) failed"
        if self.ok and not self.importable:
            verdict = (
                "a valid disk-only GMI, NOT importable by vmgenie: finish it on a Hyper-V host into "
                "GMI-<os>-<ver>.zip (docs/package.md)"
            )
        if self.only_inspect_unavailable:
            verdict = "valid as a package, but the disk was NOT inspected (libguestfs unavailable)"
        lines.append(f"{self.path}: {verdict}")
        return "\n".join(lines) + "\n"
