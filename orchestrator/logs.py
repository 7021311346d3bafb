"""Logging with structlog: a console renderer on a TTY, JSON lines otherwise.

Two rules: secrets are masked by a processor before anything is rendered, and
tracebacks never show local variables (a password in a frame's locals would leak).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from orchestrator.engine import Observer
from orchestrator.secrets import REDACTOR
from orchestrator.targets.base import Stream
from states.steps import Step


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask every registered secret in every string, at any depth (nested dicts and
    lists, and the exception's dict form, whose ``exc_value`` is the message)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return REDACTOR.text(value)
    if depth > 20:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def configure(*, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = (not out.isatty()) if json is None else json
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors += [
            # The traceback becomes text BEFORE redaction: a renderer that formats it
            # later would print the exception's message (which may hold a secret) unmasked.
            structlog.processors.format_exc_info,
            redact,
            structlog.dev.ConsoleRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class LoggingObserver:
    """Logs the engine's progress with build, stage and step bound as context."""

    def __init__(self, build_id: str) -> None:
        self.log = structlog.get_logger("gmi_fsm").bind(build=build_id)

    def stage_entered(self, stage: str) -> None:
        structlog.contextvars.bind_contextvars(stage=stage)
        self.log.info("stage entered", stage=stage)

    def step_started(self, step: Step, attempt: int, note: str) -> None:
        self.log.info("step started", step=step.id, attempt=attempt, target=step.target, note=note)

    def step_output(self, step: Step, stream: Stream, data: bytes) -> None:
        return

    def step_finished(self, step: Step, outcome: str, duration_s: float, detail: str) -> None:
        log = self.log.info if outcome in ("succeeded", "already_done") else self.log.warning
        log("step finished", step=step.id, outcome=outcome, duration_s=duration_s, detail=detail)

    def message(self, text: str) -> None:
        self.log.info(text)


class FanOut:
    """Send every progress call to several observers."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def stage_entered(self, stage: str) -> None:
        for o in self.observers:
            o.stage_entered(stage)

    def step_started(self, step: Step, attempt: int, note: str) -> None:
        for o in self.observers:
            o.step_started(step, attempt, note)

    def step_output(self, step: Step, stream: Stream, data: bytes) -> None:
        for o in self.observers:
            o.step_output(step, stream, data)

    def step_finished(self, step: Step, outcome: str, duration_s: float, detail: str) -> None:
        for o in self.observers:
            o.step_finished(step, outcome, duration_s, detail)

    def message(self, text: str) -> None:
        for o in self.observers:
            o.message(text)
