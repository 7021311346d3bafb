"""Every command binds to exactly one parameter set of its documented signature.

A model of PowerShell's parameter binder (about_Parameter_Sets, about_Parameters),
coarse where PowerShell needs run-time types:

- named parameters by their full name or a documented alias (an abbreviation is refused
  here: write the full name), common parameters everywhere; a switch takes no value
  unless written ``-Switch:$value``;
- the remaining arguments bind by position, in each set, to that set's positional
  parameters not bound by name; an argument's kind is read from its syntax (a script
  block, a string or bare word, a number, a hashtable, ``$true``/``$false``, ``$null``,
  anything else: unknown) and must fit the parameter's type (a script block binds only
  to a ScriptBlock or Object parameter, a bare word only to a value in "Accepted values");
- a command after ``|`` takes pipeline input: the set needs a parameter that takes it
  and is not bound otherwise; the objects' type is not known, so such a parameter counts
  for one mandatory parameter;
- a set survives when all its mandatory parameters are bound; of several survivors the
  cmdlet's default set wins, as in PowerShell; otherwise the call is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import tree_sitter as ts

from tests.support.pscheck.findings import Finding
from tests.support.pscheck.parse import Script, line, text
from tests.support.pscheck.signatures import ALL_SETS, Param, SetUse, Signature, Signatures

SCRIPTBLOCK_TYPES = {"scriptblock", "scriptblock[]"}
ANY_TYPES = {"object", "object[]", "psobject", "psobject[]"}
NUMBER_TYPES = {
    "int32",
    "int64",
    "uint32",
    "uint64",
    "int16",
    "uint16",
    "byte",
    "double",
    "single",
    "decimal",
}


@dataclass(frozen=True)
class Bound:
    """How one command bound: its signature, the set, the parameters given by name."""

    signature: Signature
    parameter_set: str
    named: frozenset[str]  # canonical parameter names bound by name


def _key(node: ts.Node) -> tuple[int, int]:
    return (node.start_byte, node.end_byte)


def command_name(node: ts.Node) -> str:
    for c in node.children:
        if c.type == "command_name":
            return text(c)
    return ""


def has_pipeline_input(node: ts.Node) -> bool:
    prev = node.prev_sibling
    return prev is not None and prev.type == "|"


def _simple_type(t: str) -> str:
    return t.rsplit(".", maxsplit=1)[-1].lower()


def _arg_kind(node: ts.Node) -> str:
    """The kind of one command argument, from its syntax alone."""
    n = node
    while n.named_child_count == 1 and n.type not in (
        "script_block_expression",
        "hash_literal_expression",
        "variable",
        "string_literal",
        "integer_literal",
        "real_literal",
        "generic_token",
    ):
        n = n.named_children[0]
    if n.type == "script_block_expression":
        return "scriptblock"
    if n.type == "hash_literal_expression":
        return "hashtable"
    if n.type in ("string_literal", "generic_token"):
        return "string"
    if n.type in ("integer_literal", "real_literal"):
        return "number"
    if n.type == "variable":
        name = text(n).lower()
        if name in ("$true", "$false"):
            return "bool"
        if name == "$null":
            return "null"
    return "any"


def _fits(kind: str, param: Param, node: ts.Node) -> bool:
    t = _simple_type(param.type)
    if kind in ("any", "null") or t in ANY_TYPES:
        return True
    if t in SCRIPTBLOCK_TYPES:
        return kind == "scriptblock"
    if kind in ("scriptblock", "hashtable"):
        return t in ("hashtable", "idictionary") and kind == "hashtable"
    if param.accepted_values and kind == "string":
        word = text(node).strip().strip("'\"")
        return word.lower() in {v.lower() for v in param.accepted_values}
    if t in ("boolean", "switchparameter"):
        return kind in ("bool", "number")
    if t.rstrip("[]") in NUMBER_TYPES:
        return kind in ("number", "string", "bool")
    return True


@dataclass
class _Call:
    node: ts.Node
    named: dict[str, tuple[Param, ts.Node | None]]  # canonical name -> (param, value node)
    positional: list[ts.Node]
    piped: bool
    problems: list[str]


def _elements(node: ts.Node) -> list[ts.Node]:
    for c in node.children:
        if c.type == "command_elements":
            return [e for e in c.children if e.type not in ("redirection",)]
    return []


def _read_call(node: ts.Node, sig: Signature, sigs: Signatures) -> _Call:
    call = _Call(node, {}, [], has_pipeline_input(node), [])
    elements = _elements(node)
    i = 0
    while i < len(elements):
        e = elements[i]
        i += 1
        if e.type == "command_argument_sep":
            continue
        if e.type == "command_parameter":
            raw = text(e).lstrip("-").rstrip(":")
            param = sig.param(raw) or sigs.common.get(raw.lower())
            if param is None:
                known = ", ".join(sorted(sig.params)) or "none"
                call.problems.append(f"{sig.name} has no parameter -{raw} (documented: {known})")
                continue
            colon = (
                i < len(elements) and elements[i].type == "command_argument_sep" and text(elements[i]) == ":"
            )
            value = None
            if colon or not param.is_switch:
                while i < len(elements) and elements[i].type == "command_argument_sep":
                    i += 1
                if i >= len(elements) or elements[i].type == "command_parameter":
                    call.problems.append(f"{sig.name} -{param.name} needs a value")
                else:
                    value = elements[i]
                    i += 1
            if param.name in call.named:
                call.problems.append(f"{sig.name} -{param.name} is given twice")
            call.named[param.name] = (param, value)
            continue
        if e.type == "variable" and text(e).startswith("@"):
            call.problems.append(f"{sig.name}: splatting ({text(e)}) cannot be checked; bind by name")
            continue
        call.positional.append(e)
    return call


def _try_set(call: _Call, sig: Signature, pset: str) -> str | None:
    """None when the call binds to ``pset``; else why not."""

    def use(p: Param) -> SetUse | None:
        return p.sets.get(pset) or p.sets.get(ALL_SETS)

    for name, (param, value) in call.named.items():
        if param.sets and use(param) is None:
            return f"-{name} is not in it"
        if value is not None and param.sets and not _fits(_arg_kind(value), param, value):
            return f"-{name} cannot take {text(value).strip()[:40]!r} ({param.type})"
    bound = set(call.named)
    slots = sorted(
        (u.position, p) for p in sig.params.values() if (u := use(p)) is not None and u.position is not None
    )
    free = [p for _, p in slots if p.name not in bound]
    if len(call.positional) > len(free):
        extra = text(call.positional[len(free)]).strip()[:40]
        return f"no positional parameter left for {extra!r}"
    for arg, p in zip(call.positional, free, strict=False):
        if not _fits(_arg_kind(arg), p, arg):
            return f"{text(arg).strip()[:40]!r} does not fit -{p.name} ({p.type}) by position"
        bound.add(p.name)
    if call.piped:
        takers = [
            p for p in sig.params.values() if (u := use(p)) is not None and u.pipeline and p.name not in bound
        ]
        if not takers:
            return "nothing in it takes pipeline input"
        mandatory_takers = [p for p in takers if (u := use(p)) is not None and u.required]
        bound.add((mandatory_takers or takers)[0].name)
    missing = [
        p.name
        for p in sig.params.values()
        if (u := use(p)) is not None and u.required and p.name not in bound
    ]
    if missing:
        return f"mandatory -{', -'.join(missing)} not given"
    return None


def bind(call_node: ts.Node, sig: Signature, sigs: Signatures) -> tuple[Bound | None, list[str]]:
    call = _read_call(call_node, sig, sigs)
    if call.problems:
        return None, call.problems
    why = {s: _try_set(call, sig, s) for s in sig.sets}
    fits = [s for s, reason in why.items() if reason is None]
    if len(fits) > 1 and sig.default_set in fits:
        fits = [sig.default_set]
    if len(fits) == 1:
        return Bound(sig, fits[0], frozenset(call.named)), []
    if not fits:
        detail = "; ".join(f"{s}: {r}" for s, r in why.items())
        return None, [f"{sig.name} binds to no parameter set ({detail}) [{sig.source}]"]
    return None, [f"{sig.name} is ambiguous between parameter sets {', '.join(fits)} [{sig.source}]"]


# -- the functions a script defines ---------------------------------------------------------


def script_functions(script: Script) -> dict[str, Signature]:
    """Functions defined in the script, as signatures: a function without
    [Parameter()] attributes has one set whose parameters bind by position in order."""
    out: dict[str, Signature] = {}
    for fn in script.of_type("function_statement"):
        name = next(text(c) for c in fn.children if c.type == "function_name")
        params: dict[str, Param] = {}
        for sp in script.of_type("script_parameter", node=fn):
            if sp.parent is None or sp.parent.parent is None or sp.parent.parent.parent is None:
                continue
            if sp.parent.parent.parent.parent != fn:  # only this function's own param block
                continue
            var = next(text(c) for c in sp.children if c.type == "variable").lstrip("$")
            types = [text(a).strip("[]") for a in script.of_type("attribute", node=sp)]
            ptype = types[0] if types else "Object"
            ptype = "SwitchParameter" if ptype.lower() == "switch" else ptype
            params[var] = Param(var, ptype, (), {ALL_SETS: SetUse(False, len(params), False)})
        out[name.lower()] = Signature(name, "function in the script", (ALL_SETS,), ALL_SETS, params, "value")
    return out


def bind_all(script: Script, sigs: Signatures) -> tuple[dict[tuple[int, int], Bound], list[Finding]]:
    functions = script_functions(script)
    bound: dict[tuple[int, int], Bound] = {}
    findings: list[Finding] = []
    for node in script.of_type("command"):
        name = command_name(node)
        if not name:
            findings.append(
                Finding("binding", line(node), f"a command invoked by expression: {text(node)[:40]!r}")
            )
            continue
        sig = functions.get(name.lower()) or sigs.cmdlet(name)
        if sig is None:
            findings.append(
                Finding(
                    "binding",
                    line(node),
                    f"{name} is not in the signature table ({', '.join(sigs.sources)}): add it with "
                    "tests/orchestrator/hyperv/ps_signatures/generate.py (docs/hyperv.md)",
                )
            )
            continue
        result, problems = bind(node, sig, sigs)
        findings += [Finding("binding", line(node), p) for p in problems]
        if result is not None:
            bound[_key(node)] = result
    return bound, findings
