"""Static checks of gmi-fsm's PowerShell scripts, since no PowerShell runs here.

Four kinds, each a module: the text parses with a PowerShell grammar (parse.py), it
uses only Windows PowerShell 5.1 syntax (syntax51.py), every command binds to exactly
one parameter set of its documented signature (binding.py, with the tables in
tests/orchestrator/hyperv/ps_signatures/), and nothing but the one result object
reaches the output stream (output.py). :func:`check` runs them all.
"""

from __future__ import annotations

from tests.support.pscheck.binding import bind_all
from tests.support.pscheck.findings import Finding
from tests.support.pscheck.output import check_output
from tests.support.pscheck.parse import Script, parse_errors
from tests.support.pscheck.signatures import Signatures, load_signatures
from tests.support.pscheck.syntax51 import check_syntax51

__all__ = ["Finding", "Script", "Signatures", "check", "load_signatures"]


def check(text: str, signatures: Signatures | None = None) -> list[Finding]:
    """Every finding of every kind for one script's text (preamble included)."""
    sigs = signatures or load_signatures()
    script = Script(text)
    findings = parse_errors(script)
    findings += check_syntax51(script)
    bindings, bind_findings = bind_all(script, sigs)
    findings += bind_findings
    findings += check_output(script, sigs, bindings)
    return findings
