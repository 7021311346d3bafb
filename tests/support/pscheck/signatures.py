"""The documented signatures (tests/orchestrator/hyperv/ps_signatures/*.yaml), and the
signatures of the functions a script defines itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

TABLES = Path(__file__).resolve().parents[2] / "orchestrator" / "hyperv" / "ps_signatures"
ALL_SETS = "__AllParameterSets"


@dataclass(frozen=True)
class SetUse:
    required: bool
    position: int | None
    pipeline: bool


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    aliases: tuple[str, ...]
    sets: dict[str, SetUse]
    accepted_values: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()  # a provider's dynamic parameter: only on its paths

    @property
    def is_switch(self) -> bool:
        return self.type.split(".")[-1] == "SwitchParameter"


@dataclass(frozen=True)
class Signature:
    name: str
    source: str  # the document (or "function in the script")
    sets: tuple[str, ...]
    default_set: str | None
    params: dict[str, Param]
    emits: str = "always"  # none | passthru | always | value (a script function) | result
    _by_name: dict[str, Param] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for p in self.params.values():
            for n in (p.name, *p.aliases):
                self._by_name[n.lower()] = p

    def param(self, name: str) -> Param | None:
        return self._by_name.get(name.lower())


@dataclass(frozen=True)
class Signatures:
    cmdlets: dict[str, Signature]  # lower-case name -> signature
    common: dict[str, Param]  # lower-case name or alias -> common parameter
    sources: tuple[str, ...]

    def cmdlet(self, name: str) -> Signature | None:
        return self.cmdlets.get(name.lower())


def _param(name: str, raw: dict[str, object]) -> Param:
    sets = {
        s: SetUse(bool(u["required"]), u["position"], bool(u["pipeline"]))  # type: ignore[index]
        for s, u in raw.get("sets", {}).items()  # type: ignore[union-attr]
    }
    return Param(
        name,
        str(raw["type"]),
        tuple(raw.get("aliases", []) or []),  # type: ignore[arg-type]
        sets,
        tuple(raw.get("accepted_values", []) or []),  # type: ignore[arg-type]
        tuple(raw.get("providers", []) or []),  # type: ignore[arg-type]
    )


@cache
def load_signatures(folder: Path = TABLES) -> Signatures:
    cmdlets: dict[str, Signature] = {}
    sources = []
    for table in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(table.read_text(encoding="utf-8"))
        if "cmdlets" not in data:
            continue
        src = data["source"]
        sources.append(f"{table.name}: {src['repository']}@{src['commit']} ({src['commit_date']})")
        for name, c in data["cmdlets"].items():
            params = {p: _param(p, raw) for p, raw in c["parameters"].items()}
            # The scripts work on FileSystem paths: other providers' dynamic parameters
            # do not exist there (and some would be mandatory, like WSMan's -ConnectionURI).
            params = {k: v for k, v in params.items() if not v.providers or "FileSystem" in v.providers}
            cmdlets[name.lower()] = Signature(
                name,
                f"{src['repository']} {c['document']}",
                tuple(c["sets"]),
                c["default_set"],
                params,
                c["emits"],
            )
    common_data = yaml.safe_load((folder / "common-parameters.yaml").read_text(encoding="utf-8"))
    common = {}
    for name, raw in common_data["parameters"].items():
        p = Param(name, raw["type"], tuple(raw["aliases"]), {})
        for n in (name, *p.aliases):
            common[n.lower()] = p
    return Signatures(cmdlets, common, tuple(sources))
