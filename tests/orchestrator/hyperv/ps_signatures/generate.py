#!/usr/bin/env python3
"""Write a signature table (``*.yaml`` beside this file) from Microsoft's published
cmdlet reference: the platyPS markdown of MicrosoftDocs/windows-powershell-docs (the
Hyper-V and SmbShare modules of Windows Server 2022) and MicrosoftDocs/PowerShell-Docs
(Windows PowerShell 5.1).

The table is data for the static checks of tests/orchestrator/hyperv/test_hyperv_static.py:
per cmdlet its parameter sets (the default one marked), every parameter with its type,
aliases and, per set, whether it is mandatory, its position and whether it takes
pipeline input; and whether the cmdlet writes objects to the output stream (from the
document's OUTPUTS section: "None" with a PassThru switch means only with -PassThru).
Each table names the repository, commit and date it was read from, and each cmdlet its
document, so a reader can check any line against its source.

Usage (a clone or a bare git directory of the docs repository; nothing is fetched):

    python tests/orchestrator/hyperv/ps_signatures/generate.py hyper-v.yaml \\
        --git-dir ~/src/windows-powershell-docs --repository MicrosoftDocs/windows-powershell-docs \\
        --root docset/winserver2022-ps/Hyper-V --root docset/winserver2022-ps/SmbShare \\
        Get-VM Set-VM ...

Running it again with more cmdlet names adds them (the names already in the file are
kept and read again from the same commit).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALL = "(All)"
PASSTHRU = {"passthru"}


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    ).stdout


def find_document(git_dir: Path, roots: list[str], cmdlet: str) -> str:
    for root in roots:
        names = git(git_dir, "ls-tree", "--name-only", f"HEAD:{root}").split()
        for name in names:
            if name.lower() == f"{cmdlet.lower()}.md":
                return f"{root}/{name}"
    raise SystemExit(f"no document for {cmdlet} under {', '.join(roots)}")


def _sections(text: str, level: str) -> dict[str, str]:
    """Heading -> body for the headings of one level (``##`` or ``###``)."""
    out: dict[str, str] = {}
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    for i in range(1, len(parts), 2):
        out[parts[i].strip()] = parts[i + 1]
    return out


def _per_set(value: str, sets: list[str]) -> dict[str, str]:
    """``True`` or ``True (A, B), False (C)`` -> {set: value}."""
    value = value.strip()
    if "(" not in value:
        return dict.fromkeys(sets, value)
    out: dict[str, str] = {}
    for m in re.finditer(r"(\w+)\s*\(([^)]*)\)", value):
        for s in m.group(2).split(","):
            out[s.strip()] = m.group(1)
    return out


def parse(text: str, document: str) -> dict[str, Any]:
    date = re.search(r"^ms\.date:\s*(.+)$", text, flags=re.MULTILINE)
    top = _sections(text, "##")
    syntax = _sections(top["SYNTAX"], "###")
    sets: list[str] = []
    default = None
    for heading in syntax:
        # PowerShell 5.1's provider cmdlets show each set once per provider:
        # "Path (Default) - FileSystem provider" is the set "Path".
        plain = re.sub(r"\s+-\s+[\w ]*providers?$", "", heading)
        name = plain.replace("(Default)", "").strip()
        if name not in sets:
            sets.append(name)
        if "(Default)" in plain:
            default = name
    if not sets:  # one syntax block without a heading: PowerShell's name for it
        sets, default = ["__AllParameterSets"], "__AllParameterSets"
    if default is None:
        default = sets[0] if len(sets) == 1 else None
    params: dict[str, Any] = {}
    for heading, body in _sections(top["PARAMETERS"], "###").items():
        if not heading.startswith("-"):
            continue  # CommonParameters
        pname = heading[1:].strip()
        entry: dict[str, Any] = {"type": "", "aliases": [], "sets": {}}
        # A provider's dynamic parameter exists only on that provider's paths.
        dynamic = re.search(r"dynamic parameter (?:made available by|that) (.*?)provider", body, re.DOTALL)
        providers = re.findall(r"\*\*(\w+)\*\*", dynamic.group(1)) if dynamic else []
        if providers:
            entry["providers"] = providers
        for block in re.findall(r"```yaml\n(.*?)```", body, flags=re.DOTALL):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    fields[k.strip()] = v.strip()
            entry["type"] = fields.get("Type", entry["type"])
            aliases = [a.strip() for a in fields.get("Aliases", "").split(",") if a.strip()]
            entry["aliases"] = sorted(set(entry["aliases"]) | set(aliases))
            named = fields.get("Parameter Sets", ALL)
            in_sets = sets if named == ALL else [s.strip() for s in named.split(",")]
            required = _per_set(fields.get("Required", "False"), in_sets)
            position = _per_set(fields.get("Position", "Named"), in_sets)
            pipeline = fields.get("Accept pipeline input", "False")
            for s in in_sets:
                pos = position.get(s, "Named")
                entry["sets"][s] = {
                    "required": required.get(s, "False") == "True",
                    "position": None if pos == "Named" else int(pos),
                    "pipeline": ("ByValue" in pipeline) if pipeline.startswith("True") else False,
                }
            if fields.get("Accepted values"):
                entry["accepted_values"] = [v.strip() for v in fields["Accepted values"].split(",")]
        params[pname] = entry
    outputs = list(_sections(top.get("OUTPUTS", ""), "###"))
    has_passthru = any(p.lower() in PASSTHRU for p in params)
    if outputs and all(o.lower().startswith("none") for o in outputs):
        emits = "none"
    elif any(o.lower().startswith("none") for o in outputs) and has_passthru:
        emits = "passthru"
    else:
        emits = "always"
    return {
        "document": document,
        "ms_date": date.group(1).strip() if date else "",
        "default_set": default,
        "sets": sets,
        "outputs": outputs,
        "emits": emits,
        "parameters": params,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="the YAML file beside this script")
    ap.add_argument("--git-dir", type=Path, required=True)
    ap.add_argument("--repository", required=True, help="owner/name, recorded in the table")
    ap.add_argument("--root", action="append", required=True, help="folder of the module's documents")
    ap.add_argument("--title", default="", help="what the table covers, recorded in the table")
    ap.add_argument("cmdlets", nargs="*")
    args = ap.parse_intermixed_args(argv)
    out = HERE / args.table
    old = yaml.safe_load(out.read_text()) if out.exists() else {"cmdlets": {}}
    names = sorted(set(old.get("cmdlets", {})) | set(args.cmdlets))
    commit = git(args.git_dir, "rev-parse", "HEAD").strip()
    date = git(args.git_dir, "show", "-s", "--format=%cs", "HEAD").strip()
    table = {
        "title": args.title or old.get("title", ""),
        "source": {
            "repository": args.repository,
            "commit": commit,
            "commit_date": date,
            "roots": args.root,
            "generated_by": "tests/orchestrator/hyperv/ps_signatures/generate.py",
        },
        "cmdlets": {},
    }
    for name in names:
        doc = find_document(args.git_dir, args.root, name)
        table["cmdlets"][name] = parse(git(args.git_dir, "show", f"HEAD:{doc}"), doc)
    header = (
        "# Generated from Microsoft's published cmdlet reference by generate.py (see its docstring);\n"
        "# do not edit by hand: add a cmdlet by running the generator with its name.\n"
    )
    out.write_text(
        header + yaml.safe_dump(table, sort_keys=False, width=100, default_flow_style=None), encoding="utf-8"
    )
    print(f"wrote {out}: {len(names)} cmdlets from {args.repository}@{commit[:12]} ({date})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
