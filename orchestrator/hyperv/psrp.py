"""The real :class:`~orchestrator.hyperv.executor.PowerShellExecutor`: PowerShell
Remoting (WinRM, WS-Management) through pypsrp 0.9.

One ``RunspacePool`` per executor, that is per host per run: opened by the first call,
reused by every later one (a pool costs a WinRM shell and a PowerShell process on the
host, seconds on a busy one), closed by :meth:`PsrpExecutor.close`, and dropped after a
transport failure so that the next call opens a fresh one. pypsrp is synchronous: each
call runs in a worker thread (``asyncio.to_thread``); a lock makes the calls take turns
on the one pool. User values travel only through ``add_parameters``, each tagged with
the PSRP type its script's ``param()`` block declares (:func:`wire_parameters`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
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
from orchestrator.hyperv.scripts import ScriptParamError, check_params, script_name
from orchestrator.targets.base import TargetError

log = logging.getLogger(__name__)

_WSMAN_OPERATION_TIMEDOUT = 0x80338029  # the WS-Management OperationTimeout ran out


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
    """TCP connect (and TLS handshake) to the WinRM listener."""
    open_timeout_s: int = 120
    """WS-Management OperationTimeout of everything but a pipeline's Receive polls: opening
    the pool (a new shell and PowerShell process on the host: seconds on a slow or busy
    host, and pypsrp does not retry it), sending a command, stopping it, closing."""
    poll_s: int = 5
    """One Receive of a running pipeline waits at most this long on the host: how often the
    call's deadline and Ctrl-C are looked at."""

    def __repr__(self) -> str:
        return f"PsrpConnection({self.endpoint}, auth={self.auth}, user={self.username})"

    @property
    def endpoint(self) -> str:
        port = self.port or (5986 if self.https else 5985)
        return f"{'https' if self.https else 'http'}://{self.host}:{port}/wsman"


def wire_parameters(name: str, params: Mapping[str, object]) -> dict[str, TaggedValue]:
    """``params`` tagged with the PSRP types script ``name`` declares: pypsrp would send
    every int as <I32>, which a [long] of 2^31 or more does not survive."""
    declared = check_params(name, params)
    return {p.name: TaggedValue(p.wire_tag, params[p.name]) for p in declared}


def pipeline(pool: RunspacePool, script: str, params: Mapping[str, TaggedValue]) -> PowerShell:
    """The pipeline a call sends: the fixed script text and its tagged parameters."""
    ps = PowerShell(pool)
    ps.add_script(script)  # fixed text from orchestrator/hyperv/scripts
    ps.add_parameters(dict(params))  # every user value, bound by name
    return ps


class PsrpExecutor:
    """Runs fixed scripts on a Hyper-V host over PowerShell Remoting, on one pool."""

    def __init__(self, connection: PsrpConnection) -> None:
        self.connection = connection
        self.label = connection.endpoint
        self.pools_opened = 0
        self._lock = threading.Lock()
        self._session: tuple[WSMan, RunspacePool] | None = None

    def __repr__(self) -> str:
        return f"PsrpExecutor({self.connection!r})"

    async def run(
        self,
        script: str,
        params: Mapping[str, object],
        *,
        timeout_s: float,
        input: Sequence[str] | None = None,  # PowerShell's own name: the pipeline's input
    ) -> PsResult:
        name = script_name(script)
        if name is None:
            raise TargetError(
                f"{self.label}: refused a script that is not one of gmi-fsm's fixed scripts",
                hint="this is a bug: only orchestrator/hyperv/scripts/*.ps1 are sent to a host",
            )
        try:
            typed = wire_parameters(name, params)
        except ScriptParamError as exc:
            raise TargetError(f"{self.label}: {exc}", hint="this is a bug in gmi-fsm's plan") from None
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(
                self._run_sync, script, typed, list(input or ()), timeout_s, name, cancel
            )
        except asyncio.CancelledError:
            # Ctrl-C: the worker thread stops the pipeline at its next poll.
            cancel.set()
            raise

    async def close(self) -> None:
        """Close the pool (the host ends its shell). Waits for a call still running in its
        worker thread: an interrupted one stops its pipeline at its next poll first."""
        await asyncio.to_thread(self._close_sync)

    # -- in the worker thread ------------------------------------------------------

    def _close_sync(self) -> None:
        with self._lock:
            self._drop(graceful=True)

    def _wsman(self) -> WSMan:
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
            # The default for every operation without its own timeout: opening the pool
            # above all. A Receive poll passes poll_s instead (pypsrp then waits poll_s + 2
            # on HTTP); the HTTP read of the others must outlast the WSMan timeout.
            operation_timeout=c.open_timeout_s,
            read_timeout=c.open_timeout_s + 5,
            **kwargs,
        )

    def _pool(self) -> RunspacePool:
        if self._session is None:
            wsman = self._wsman()
            pool = RunspacePool(wsman)
            try:
                pool.open()
            except Exception as exc:
                wsman.close()
                raise _OpenFailedError from exc
            except BaseException:
                wsman.close()
                raise
            self._session = (wsman, pool)
            self.pools_opened += 1
        return self._session[1]

    def _drop(self, *, graceful: bool) -> None:
        """Forget the pool; ``graceful`` closes it on the host first (a broken one is only
        let go: its host may not answer, and it times the shell out by itself)."""
        session, self._session = self._session, None
        if session is None:
            return
        wsman, pool = session
        try:
            if graceful:
                pool.close()
        except (WinRMError, requests.RequestException) as exc:
            log.debug("closing the PowerShell session on %s failed: %s", self.label, exc)
        finally:
            wsman.close()

    def _run_sync(
        self,
        script: str,
        params: dict[str, TaggedValue],
        pieces: list[str],
        timeout_s: float,
        name: str,
        cancel: threading.Event,
    ) -> PsResult:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            try:
                ps = self._begin(script, params, pieces)
                return self._finish(ps, deadline, timeout_s, name, cancel)
            except TargetError:
                raise
            except _OpenFailedError as failed:
                exc = failed.__cause__
                assert exc is not None
                raise classify(
                    exc, self.label, self.connection.auth, name, opening=True, conn=self.connection
                ) from exc
            except Exception as exc:
                # Whatever failed may have broken the pool: the next call opens a new one.
                self._drop(graceful=False)
                raise classify(exc, self.label, self.connection.auth, name) from exc

    def _begin(self, script: str, params: dict[str, TaggedValue], pieces: list[str]) -> PowerShell:
        reused = self._session is not None
        ps = pipeline(self._pool(), script, params)
        try:
            begin(ps, pieces)
        except WSManFaultError as exc:
            if not reused:
                raise
            # The host refused the command on a pool it no longer has (its shell idle
            # timeout, a WinRM restart): the fault is its answer, so nothing ran. Once
            # more on a new pool.
            log.info("the PowerShell session on %s is gone (%s); opening a new one", self.label, exc)
            self._drop(graceful=False)
            ps = pipeline(self._pool(), script, params)
            begin(ps, pieces)
        return ps

    def _finish(
        self, ps: PowerShell, deadline: float, timeout_s: float, name: str, cancel: threading.Event
    ) -> PsResult:
        stopped = False
        while ps.state == PSInvocationState.RUNNING:
            if cancel.is_set() or time.monotonic() >= deadline:
                stopped = True
                if not _stop(ps):  # the host did not hear it: the pool is not trusted again
                    self._drop(graceful=False)
                break
            ps.poll_invoke(timeout=self.connection.poll_s)
        if cancel.is_set():
            raise TargetError(f"{self.label}: {name} was stopped (interrupted)")
        if stopped or ps.state == PSInvocationState.STOPPED:
            raise call_timeout(self.label, name, timeout_s)
        errors = [_error_text(e) for e in ps.streams.error]
        result = PsResult(output=parse_output(list(ps.output)), errors=errors, had_errors=ps.had_errors)
        try:
            ps.close()  # frees the command on the host; the pool stays for the next call
        except (WinRMError, requests.RequestException) as exc:
            log.debug("ending %s on %s failed (%s); the next call opens a new pool", name, self.label, exc)
            self._drop(graceful=False)
        return result


def begin(ps: PowerShell, pieces: list[str]) -> None:
    """Start the pipeline; with ``pieces``, send each as one pipeline input object (pypsrp
    sends them after CreatePipeline, fragmented to the envelope size, then the end of
    input) before returning: the script reads them as ``$input``."""
    if pieces:
        ps.begin_invoke(input=_one_batch(pieces))
    else:
        ps.begin_invoke()


def _one_batch(pieces: list[str]) -> Iterator[list[str]]:
    # A generator that yields a list: pypsrp sends each item as its own input object.
    yield pieces


class _OpenFailedError(Exception):
    """Opening the pool failed (its cause says how): the script was never sent."""


def _stop(ps: PowerShell) -> bool:
    """Stop a running pipeline; False when the host could not be told (the pool is then
    no longer trusted)."""
    try:
        ps.stop()
    except (WinRMError, requests.RequestException):
        return False
    return True


def _error_text(record: object) -> str:
    """An error record as one readable line: its message, and where the script was."""
    text = str(record).strip()
    for attr in ("details_message", "message"):
        extra = getattr(record, attr, None)
        if not text and extra:
            text = str(extra)
    trace = getattr(record, "script_stacktrace", None)
    return f"{text} ({str(trace).splitlines()[0]})" if trace else text


def classify(
    exc: BaseException,
    where: str,
    auth: str,
    script: str,
    *,
    opening: bool = False,
    conn: PsrpConnection | None = None,
) -> TargetError:
    """A transport failure as a :class:`TargetError` with a message and a hint; transient
    ones are ``retryable``, refusals (login, TLS) are not.

    ``opening``: it happened while opening the pool, so the script never started.
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
    if opening and (
        isinstance(exc, requests.exceptions.ReadTimeout)
        or (isinstance(exc, WSManFaultError) and exc.code == _WSMAN_OPERATION_TIMEDOUT)
    ):
        waited = f" within {conn.open_timeout_s} s" if conn is not None else ""
        return TargetError(
            f"{where}: the Hyper-V host did not open a PowerShell session{waited}; {script} was not started",
            hint="the host may be busy or slow to start a session (wsmprovhost.exe); try again, and check "
            "`winrm get winrm/config` (MaxShellsPerUser, MaxProcessesPerShell) on the host",
            retryable=True,
        )
    if opening and isinstance(exc, WSManFaultError):
        return TargetError(
            f"{where}: the Hyper-V host refused to open a PowerShell session: {exc.reason or exc}; "
            f"{script} was not started",
            hint="the account needs WinRM access (Remote Management Users or Administrators); "
            "`gmi-fsm hyperv check SPEC` checks it; see docs/hyperv.md",
            retryable=True,
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return connection_lost(where, script, "no answer (read timed out)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        # A refused or unroutable connect never sent anything; a reset afterwards did.
        text = _root(exc)
        if "refused" in text.lower() or "name or service" in text.lower() or "no route" in text.lower():
            return unreachable(where, text)
        if opening:
            return TargetError(
                f"{where}: the connection to the Hyper-V host broke while opening a PowerShell session "
                f"({text}); {script} was not started",
                hint="check the host and the network, then try again",
                retryable=True,
            )
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
