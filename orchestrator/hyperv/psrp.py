"""The real :class:`~orchestrator.hyperv.executor.PowerShellExecutor`: PowerShell
Remoting (WinRM, WS-Management) through pypsrp 0.9.

pypsrp is synchronous, so each call runs in a worker thread (``asyncio.to_thread``)
with its own ``RunspacePool``: a pool is cheap next to Hyper-V operations, and a
fresh one per call means a pipeline stopped at its deadline or a dropped connection
never poisons the next call. User values travel only through ``add_parameters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from orchestrator.hyperv.executor import (
    PsResult,
    call_timeout,
    connection_lost,
    login_refused,
    parse_output,
    tls_failure,
    unreachable,
)
from orchestrator.hyperv.scripts import script_name
from orchestrator.targets.base import TargetError

_POLL_S = 5  # one WSMan Receive waits at most this long: how often the deadline is checked


@dataclass(frozen=True, slots=True)
class PsrpConnection:
    """Where and how to log in. Secrets arrive resolved (the caller reads the spec's
    references); this object is never logged (``repr`` hides the password)."""

    host: str
    port: int | None = None
    https: bool = True
    auth: str = "negotiate"
    username: str | None = None
    password: str | None = None
    cert_validation: bool | str = True
    """True: the system CA store; a path: a CA bundle (PEM). Never False by default."""
    certificate_pem: str | None = None
    certificate_key_pem: str | None = None
    connection_timeout_s: int = 30

    def __repr__(self) -> str:
        return f"PsrpConnection({self.endpoint}, auth={self.auth}, user={self.username})"

    @property
    def endpoint(self) -> str:
        port = self.port or (5986 if self.https else 5985)
        return f"{'https' if self.https else 'http'}://{self.host}:{port}/wsman"


class PsrpExecutor:
    """Runs fixed scripts on a Hyper-V host over PowerShell Remoting."""

    def __init__(self, connection: PsrpConnection) -> None:
        self.connection = connection
        self.label = connection.endpoint

    def __repr__(self) -> str:
        return f"PsrpExecutor({self.connection!r})"

    async def run(self, script: str, params: Mapping[str, object], *, timeout_s: float) -> PsResult:
        name = script_name(script) or "a script"
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._run_sync, script, dict(params), timeout_s, name, cancel)
        except asyncio.CancelledError:
            # Ctrl-C: the worker thread stops the pipeline at its next poll.
            cancel.set()
            raise

    async def close(self) -> None:
        return  # nothing is kept open between calls

    # -- in the worker thread ------------------------------------------------------

    def _wsman(self, timeout_s: float) -> WSMan:
        c = self.connection
        kwargs: dict[str, Any] = {}
        if c.auth == "certificate":
            kwargs = {"certificate_pem": c.certificate_pem, "certificate_key_pem": c.certificate_key_pem}
        return WSMan(
            c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            ssl=c.https,
            auth=c.auth,
            cert_validation=c.cert_validation,  # type: ignore[arg-type]  # a CA path is valid too
            connection_timeout=c.connection_timeout_s,
            # A Receive may wait _POLL_S on the server: the HTTP read must outlast it.
            operation_timeout=_POLL_S,
            read_timeout=max(_POLL_S + 10, min(int(timeout_s), 60)),
            **kwargs,
        )

    def _run_sync(
        self, script: str, params: dict[str, object], timeout_s: float, name: str, cancel: threading.Event
    ) -> PsResult:
        deadline = time.monotonic() + timeout_s
        try:
            wsman = self._wsman(timeout_s)
            with wsman, RunspacePool(wsman) as pool:
                ps = PowerShell(pool)
                ps.add_script(script)  # fixed text from orchestrator/hyperv/scripts
                ps.add_parameters(params)  # every user value, bound by name
                ps.begin_invoke()
                while ps.state == PSInvocationState.RUNNING:
                    if cancel.is_set() or time.monotonic() >= deadline:
                        _stop(ps)
                        break
                    ps.poll_invoke(timeout=_POLL_S)
                if cancel.is_set():
                    raise TargetError(f"{self.label}: {name} was stopped (interrupted)")  # noqa: TRY301
                if ps.state == PSInvocationState.STOPPED:
                    raise call_timeout(self.label, name, timeout_s)  # noqa: TRY301
                errors = [_error_text(e) for e in ps.streams.error]
                return PsResult(output=parse_output(list(ps.output)), errors=errors, had_errors=ps.had_errors)
        except TargetError:
            raise
        except Exception as exc:
            raise classify(exc, self.label, self.connection.auth, name) from exc


def _stop(ps: PowerShell) -> None:
    # The pool is closed right after: a failed stop changes nothing for us.
    with contextlib.suppress(WinRMError, requests.RequestException):
        ps.stop()


def _error_text(record: object) -> str:
    """An error record as one readable line: its message, and where the script was."""
    text = str(record).strip()
    for attr in ("details_message", "message"):
        extra = getattr(record, attr, None)
        if not text and extra:
            text = str(extra)
    trace = getattr(record, "script_stacktrace", None)
    return f"{text} ({str(trace).splitlines()[0]})" if trace else text


def classify(exc: BaseException, where: str, auth: str, script: str) -> TargetError:
    """A transport failure as a :class:`TargetError` with a message and a hint.

    Order matters: ``SSLError`` is a ``ConnectionError`` in requests.
    """
    if isinstance(exc, AuthenticationError):
        return login_refused(where, auth)
    if isinstance(exc, WinRMTransportError) and exc.code == 401:
        return login_refused(where, auth)
    if isinstance(exc, requests.exceptions.SSLError):
        return tls_failure(where, _root(exc))
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return unreachable(where, "connection timed out")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return connection_lost(where, script, "no answer (read timed out)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        # A refused or unroutable connect never sent anything; a reset afterwards did.
        text = _root(exc)
        if "refused" in text.lower() or "name or service" in text.lower() or "no route" in text.lower():
            return unreachable(where, text)
        return connection_lost(where, script, text)
    if isinstance(exc, WinRMTransportError):
        return TargetError(
            f"{where}: the WinRM service answered HTTP {exc.code}",
            hint="check the listener (winrm enumerate winrm/config/listener) and the port",
            retryable=exc.code >= 500,
        )
    if isinstance(exc, WinRMError):
        return TargetError(f"{where}: PowerShell Remoting failed during {script}: {exc}", retryable=True)
    return TargetError(f"{where}: {script} failed unexpectedly: {type(exc).__name__}: {exc}")


def _root(exc: BaseException) -> str:
    """The innermost cause's text: requests wraps urllib3 wraps the socket error."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        assert nxt is not None
        seen = nxt
    reason = getattr(seen, "reason", None)
    return str(reason or seen)[:300]
