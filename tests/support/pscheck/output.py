"""Nothing but the one result object reaches the output stream.

gmi-fsm reads a script's output as exactly one JSON object (``Out-GmiResult``); any
other object a statement leaves on the output stream breaks that. A statement writes
to the output stream unless it is an assignment, an increment, a flow statement other
than ``return <value>``, cast to ``[void]``, redirected to ``$null``, or a pipeline
whose last command writes nothing: ``Out-Null``, a cmdlet whose document says it
returns nothing (or returns objects only with -PassThru, or as a job with -AsJob, and
neither is given), or a script function that writes nothing itself. A bare method
call counts as output unless its method is one of :data:`VOID_METHODS` (void wherever
.NET defines it): write ``[void]`` or ``| Out-Null`` for any other.

``Out-GmiResult`` is the result: each call at the script's top level must end the
script (it is the last statement on its way out, or ``return`` follows it), so one
result object is written, never two.
"""

from __future__ import annotations

from collections.abc import Iterator

import tree_sitter as ts

from tests.support.pscheck.binding import Bound, command_name, script_functions
from tests.support.pscheck.findings import Finding
from tests.support.pscheck.parse import Script, line, text
from tests.support.pscheck.signatures import Signatures

RESULT_FUNCTION = "out-gmiresult"
# Methods that return void on every .NET type that has them in the scripts' use:
# IDisposable.Dispose, Stream.Close/Flush/SetLength/Write/WriteByte.
VOID_METHODS = {"dispose", "close", "flush", "setlength", "write", "writebyte"}
_SILENT_STATEMENTS = {"function_statement", "empty_statement", "comment"}
_BLOCKS = {
    "if_statement",
    "else_clause",
    "elseif_clause",
    "elseif_clauses",
    "foreach_statement",
    "while_statement",
    "do_statement",
    "for_statement",
    "try_statement",
    "catch_clauses",
    "catch_clause",
    "finally_clause",
}
_LOOPS = {"foreach_statement", "while_statement", "do_statement", "for_statement"}


def _key(node: ts.Node) -> tuple[int, int]:
    return (node.start_byte, node.end_byte)


def _statements(block: ts.Node) -> list[ts.Node]:
    """The statements of a statement_block / statement_list / script_block_body."""
    if block.type == "program":
        return [s for c in block.children if c.type == "statement_list" for s in _statements(c)]
    if block.type in ("statement_block", "script_block_body", "script_block"):
        for c in block.children:
            if c.type in ("statement_list", "script_block_body"):
                return _statements(c)
        return []
    return [c for c in block.named_children if c.type != "comment"]


def _blocks(statement: ts.Node) -> Iterator[ts.Node]:
    """The statement blocks directly inside a compound statement (if/else, loops, try)."""
    for c in statement.children:
        if c.type == "statement_block":
            yield c
        elif c.type in _BLOCKS:
            yield from _blocks(c)


class _Checker:
    def __init__(self, script: Script, sigs: Signatures, bindings: dict[tuple[int, int], Bound]) -> None:
        self.script = script
        self.sigs = sigs
        self.bindings = bindings
        self.functions = script_functions(script)
        self.findings: list[Finding] = []
        self.results = 0
        self.silent_functions = {
            name for name in self.functions if name != RESULT_FUNCTION and not self._function_writes(name)
        }

    # -- what one pipeline writes ------------------------------------------------------

    def _function_writes(self, name: str) -> bool:
        fn = next(
            f
            for f in self.script.of_type("function_statement")
            if next(text(c) for c in f.children if c.type == "function_name").lower() == name
        )
        body = next(c for c in fn.children if c.type == "script_block")
        quiet = _Checker.__new__(_Checker)
        quiet.__dict__.update(self.__dict__)
        quiet.findings = []
        quiet.silent_functions = set()  # conservative while deciding
        quiet.results = 0
        quiet._block(body, tail=False, top=False)
        return bool(quiet.findings)

    def _command_writes(self, cmd: ts.Node) -> str | None:
        """What a pipeline's last command writes, as a reason, or None."""
        name = command_name(cmd).lower()
        if name == "out-null":
            return None
        if name in ("write-output", "echo"):
            return f"{command_name(cmd)} writes to the output stream"
        for r in (c for c in self.script.of_type("redirection", node=cmd)):
            if text(r).replace(" ", "").lower() in (">$null", "1>$null", "*>$null"):
                return None
        if name in self.functions:
            if name in self.silent_functions:
                return None
            return f"{command_name(cmd)} returns a value here, which goes to the output stream"
        bound = self.bindings.get(_key(cmd))
        sig = self.sigs.cmdlet(name)
        if sig is None:
            return None  # an unknown command is the binding check's finding
        named = bound.named if bound is not None else frozenset()
        if "AsJob" in named:
            return f"{sig.name} -AsJob returns a job object"
        if sig.emits == "none" or (sig.emits == "passthru" and not ({"PassThru", "Passthru"} & named)):
            return None
        return f"{sig.name} returns objects ({sig.source} OUTPUTS)"

    def _pipeline_writes(self, pipe: ts.Node) -> str | None:
        raw = text(pipe).strip()
        if raw.lower().startswith("[void]"):
            return None
        kids = pipe.named_children
        if kids and kids[0].type == "assignment_expression":
            return None
        chain = next((c for c in pipe.children if c.type == "pipeline_chain"), None)
        if chain is None:
            return None
        elements = [c for c in chain.named_children if c.type != "comment"]
        if not elements:
            return None
        last = elements[-1]
        if last.type == "command":
            return self._command_writes(last)
        if any(
            n.type
            in (
                "post_increment_expression",
                "pre_increment_expression",
                "post_decrement_expression",
                "pre_decrement_expression",
            )
            for n in self.script.nodes(last)
            if text(n).strip() == text(last).strip()
        ):
            return None
        method = self._bare_method(last)
        if method is not None and method.lower() in VOID_METHODS:
            return None
        return f"the value of {raw[:50]!r} goes to the output stream (assign it, or [void] / | Out-Null)"

    def _bare_method(self, expr: ts.Node) -> str | None:
        """The method name when the expression is one method call, else None."""
        n = expr
        while n.named_child_count == 1:
            n = n.named_children[0]
        if n.type == "invokation_expression":
            names = [c for c in n.children if c.type == "member_name"]
            return text(names[-1]) if names else None
        return None

    # -- statements ----------------------------------------------------------------------

    def _result_call(self, stmt: ts.Node) -> bool:
        if stmt.type != "pipeline":
            return False
        cmds = list(self.script.of_type("command", node=stmt))
        return (
            len(cmds) >= 1
            and command_name(cmds[0]).lower() == RESULT_FUNCTION
            and text(stmt).strip().lower().startswith(RESULT_FUNCTION)
        )

    def _block(self, block: ts.Node, *, tail: bool, top: bool) -> None:
        stmts = [s for s in _statements(block) if s.type not in _SILENT_STATEMENTS]
        for i, stmt in enumerate(stmts):
            last = i == len(stmts) - 1
            nxt = stmts[i + 1] if not last else None
            self._statement(stmt, tail=tail and last, top=top, next_stmt=nxt)

    def _statement(self, stmt: ts.Node, *, tail: bool, top: bool, next_stmt: ts.Node | None) -> None:
        if stmt.type == "pipeline":
            if top and self._result_call(stmt):
                self.results += 1
                returns = next_stmt is not None and text(next_stmt).strip().lower() == "return"
                if not (tail or returns):
                    self.findings.append(
                        Finding(
                            "output",
                            line(stmt),
                            "Out-GmiResult is not the script's last word here: "
                            "`return` after it, or a second result may follow",
                        )
                    )
                return
            why = self._pipeline_writes(stmt)
            if why is not None:
                self.findings.append(Finding("output", line(stmt), why))
            return
        if stmt.type == "flow_control_statement":
            words = text(stmt).split(None, 1)
            if words and words[0].lower() == "return" and len(words) > 1:
                self.findings.append(Finding("output", line(stmt), f"`{text(stmt)[:50]}` writes its value"))
            return
        if stmt.type in _BLOCKS:
            inner_tail = tail and stmt.type not in _LOOPS
            for b in _blocks(stmt):
                self._block(b, tail=inner_tail, top=top)
            return
        if stmt.type == "statement_block":
            self._block(stmt, tail=tail, top=top)
            return
        self.findings.append(
            Finding(
                "output",
                line(stmt),
                f"the checker does not know the statement {stmt.type}: keep scripts simple",
            )
        )


def check_output(script: Script, sigs: Signatures, bindings: dict[tuple[int, int], Bound]) -> list[Finding]:
    checker = _Checker(script, sigs, bindings)
    checker._block(script.root, tail=True, top=True)
    if checker.results == 0:
        checker.findings.append(Finding("output", 1, "the script never writes its result (Out-GmiResult)"))
    return checker.findings
