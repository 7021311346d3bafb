"""PsrpExecutor against real local failures (no Windows needed): a closed port, a
TLS server with a self-signed certificate, an HTTP server answering 401; and its
deadline handling with a stand-in pipeline."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pypsrp.exceptions import WSManFaultError

from orchestrator.hyperv import psrp
from orchestrator.hyperv.executor import CallTimeoutError
from orchestrator.hyperv.psrp import PsrpConnection, PsrpExecutor
from orchestrator.hyperv.scripts import script_text
from orchestrator.targets.base import TargetError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(conn: PsrpConnection) -> TargetError:
    ex = PsrpExecutor(conn)
    with pytest.raises(TargetError) as info:
        asyncio.run(ex.run(script_text("integration-status"), {"VmName": "x", "BuildId": "b"}, timeout_s=20))
    return info.value


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def server_401() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hv.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


def test_closed_port_is_unreachable() -> None:
    err = _run(PsrpConnection("127.0.0.1", port=_free_port(), auth="ntlm", username="u", password="p"))
    assert "cannot reach the Hyper-V host's WinRM listener" in str(err)
    assert "5986" in err.hint
    assert err.retryable


def test_self_signed_certificate_is_a_tls_failure(tls_server: int) -> None:
    err = _run(PsrpConnection("127.0.0.1", port=tls_server, auth="ntlm", username="u", password="p"))
    assert "TLS handshake" in str(err)
    assert "ca_bundle" in err.hint
    assert not err.retryable


def test_401_is_login_refused(server_401: int) -> None:
    err = _run(
        PsrpConnection("127.0.0.1", port=server_401, https=False, auth="ntlm", username="u", password="p")
    )
    assert "refused the login (ntlm)" in str(err)
    assert not err.retryable


def test_password_never_in_repr() -> None:
    conn = PsrpConnection("hv01", username="builder", password="s3cret-pw")
    assert "s3cret-pw" not in repr(conn)
    assert "s3cret-pw" not in repr(PsrpExecutor(conn))


class _Ledger:
    """What the stand-ins below saw: pools opened and closed, pipelines begun."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.wsman_closed = 0
        self.pipelines: list[_Pipeline] = []
        self.begin_errors: list[BaseException] = []  # raised by the next begin_invoke calls
        self.never_ends = False
        self.stop_fails = False


LEDGER = _Ledger()


class _FakeWsman:
    def close(self) -> None:
        LEDGER.wsman_closed += 1


class _FakePool:
    def __init__(self, wsman: object) -> None:
        self.state = "new"

    def open(self) -> None:
        LEDGER.opened += 1
        self.state = "open"

    def close(self) -> None:
        LEDGER.closed += 1
        self.state = "closed"


class _Streams:
    error: list[object] = []


class _Pipeline:
    """A stand-in pipeline: ends at once with one result object, or (never_ends) runs
    until stopped. Records what it was given."""

    def __init__(self, pool: _FakePool) -> None:
        assert pool.state == "open", "a pipeline on a pool that is not open"
        self.pool = pool
        self.state = psrp.PSInvocationState.NOT_STARTED
        self.scripts: list[str] = []
        self.params: dict[str, object] = {}
        self.stopped = False
        self.closed = False
        self.streams = _Streams()
        self.output: list[object] = []
        self.had_errors = False
        LEDGER.pipelines.append(self)

    def add_script(self, text: str) -> None:
        self.scripts.append(text)

    def add_parameters(self, params: dict[str, object]) -> None:
        self.params.update(params)

    def begin_invoke(self) -> None:
        if LEDGER.begin_errors:
            raise LEDGER.begin_errors.pop(0)
        if LEDGER.never_ends:
            self.state = psrp.PSInvocationState.RUNNING
        else:
            self.output = ['{"exit": 0, "facts": {}, "artifacts": [], "message": "ok"}']
            self.state = psrp.PSInvocationState.COMPLETED

    def poll_invoke(self, timeout: int | None = None) -> None:
        threading.Event().wait(0.05)

    def stop(self) -> None:
        if LEDGER.stop_fails:  # as pypsrp: STOPPING, then the signal does not get through
            self.state = psrp.PSInvocationState.STOPPING
            raise requests.exceptions.ConnectionError("Connection reset by peer")
        self.stopped = True
        self.state = psrp.PSInvocationState.STOPPED

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> _Ledger:
    global LEDGER
    LEDGER = _Ledger()
    monkeypatch.setattr(psrp, "PowerShell", _Pipeline)
    monkeypatch.setattr(psrp, "RunspacePool", _FakePool)
    monkeypatch.setattr(PsrpExecutor, "_wsman", lambda self: _FakeWsman())
    return LEDGER


PROBE = {"VmName": "a'; $(evil)", "BuildId": "b"}


def _call(ex: PsrpExecutor, timeout_s: float = 10) -> object:
    return asyncio.run(ex.run(script_text("integration-status"), PROBE, timeout_s=timeout_s))


def test_deadline_stops_the_pipeline(stand_ins: _Ledger) -> None:
    stand_ins.never_ends = True
    ex = PsrpExecutor(PsrpConnection("hv01"))
    with pytest.raises(CallTimeoutError, match="integration-status did not finish within 0.3 s"):
        _call(ex, 0.3)
    ps = stand_ins.pipelines[-1]
    assert ps.stopped
    assert ps.scripts == [script_text("integration-status")]  # fixed text, exactly
    assert {k: v.value for k, v in ps.params.items()} == PROBE  # values only as parameters
    assert {k: v.tag for k, v in ps.params.items()} == {"VmName": "S", "BuildId": "S"}
    # A stopped pipeline does not cost the pool.
    stand_ins.never_ends = False
    _call(ex)
    assert stand_ins.opened == 1


def test_a_stop_the_host_does_not_hear_still_times_out_and_drops_the_pool(stand_ins: _Ledger) -> None:
    stand_ins.never_ends = True
    stand_ins.stop_fails = True
    ex = PsrpExecutor(PsrpConnection("hv01"))
    with pytest.raises(CallTimeoutError):
        _call(ex, 0.2)
    stand_ins.never_ends = stand_ins.stop_fails = False
    _call(ex)
    assert stand_ins.opened == 2  # the pool was not trusted again


def test_one_pool_serves_every_call_until_close(stand_ins: _Ledger) -> None:
    ex = PsrpExecutor(PsrpConnection("hv01"))

    async def calls() -> None:
        for _ in range(3):
            await ex.run(script_text("integration-status"), PROBE, timeout_s=10)
        # Calls made together take turns on the one pool.
        await asyncio.gather(
            *(ex.run(script_text("integration-status"), PROBE, timeout_s=10) for _ in range(3))
        )
        await ex.close()

    asyncio.run(calls())
    assert (stand_ins.opened, stand_ins.closed, ex.pools_opened) == (1, 1, 1)
    assert len(stand_ins.pipelines) == 6
    assert all(p.closed for p in stand_ins.pipelines)  # each command freed on the host
    assert stand_ins.wsman_closed == 1


def test_a_broken_connection_drops_the_pool_and_the_next_call_opens_one(stand_ins: _Ledger) -> None:
    ex = PsrpExecutor(PsrpConnection("hv01"))
    _call(ex)
    stand_ins.begin_errors = [requests.exceptions.ConnectionError("Connection reset by peer")]
    with pytest.raises(TargetError) as info:
        _call(ex)
    assert "connection to the Hyper-V host was lost during integration-status" in str(info.value)
    assert info.value.retryable  # transient, as classify() says
    assert stand_ins.closed == 0  # a broken pool is let go, not closed over a dead link
    _call(ex)
    assert stand_ins.opened == 2


def test_a_pool_the_host_forgot_is_opened_again_once(stand_ins: _Ledger) -> None:
    ex = PsrpExecutor(PsrpConnection("hv01"))
    _call(ex)
    # The host's shell idle timeout ended our pool: its answer to the next command is a fault.
    stand_ins.begin_errors = [WSManFaultError(0x8033805B, "hv01", "the shell was not found", "", "", "")]
    _call(ex)
    assert stand_ins.opened == 2
    # A fault on a pool just opened is not retried: it is the answer.
    asyncio.run(ex.close())
    stand_ins.begin_errors = [WSManFaultError(0x80338000, "hv01", "access denied", "", "", "")]
    with pytest.raises(TargetError, match="PowerShell Remoting failed during integration-status"):
        _call(ex)
    assert stand_ins.opened == 3


def test_ctrl_c_stops_the_running_pipeline_and_close_waits_for_it(stand_ins: _Ledger) -> None:
    stand_ins.never_ends = True
    ex = PsrpExecutor(PsrpConnection("hv01"))

    async def interrupted() -> None:
        task = asyncio.create_task(ex.run(script_text("integration-status"), PROBE, timeout_s=60))
        while not stand_ins.pipelines or stand_ins.pipelines[-1].state != psrp.PSInvocationState.RUNNING:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ex.close()  # returns once the worker stopped the pipeline

    asyncio.run(interrupted())
    assert stand_ins.pipelines[-1].stopped
    assert stand_ins.closed == 1


def test_a_script_that_is_not_a_fixed_one_or_a_badly_typed_value_is_refused(stand_ins: _Ledger) -> None:
    ex = PsrpExecutor(PsrpConnection("hv01"))
    with pytest.raises(TargetError, match="not one of gmi-fsm's fixed scripts"):
        asyncio.run(ex.run("Get-Process", {}, timeout_s=5))
    with pytest.raises(TargetError, match=r"\$Offset is \[long\]"):
        asyncio.run(
            ex.run(
                script_text("file-read-pieces"),
                {"Path": "p", "Offset": "0", "Length": 1, "PieceBytes": 1},
                timeout_s=5,
            )
        )
    assert stand_ins.opened == 0  # refused before anything was sent


# -- opening the pool on a slow host, for real (local HTTP servers) --------------------


def _stalling_server(stall_s: float, status: int | None) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Accepts, reads the request, waits ``stall_s``, then answers ``status`` (None: never)."""

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            threading.Event().wait(stall_s)
            if status is None:
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, int(srv.server_address[1])


def test_opening_the_pool_outlasts_the_receive_poll() -> None:
    # The host answers the first request only after 3 s: longer than a Receive poll
    # (poll_s=1 here), well within the open timeout. The answer arrives and is read.
    srv, port = _stalling_server(3, 401)
    try:
        conn = PsrpConnection(
            "127.0.0.1", port=port, https=False, auth="ntlm", username="u", password="p", poll_s=1
        )
        err = _run(conn)
    finally:
        srv.shutdown()
    assert "refused the login (ntlm)" in str(err)


def test_a_host_that_never_opens_a_session_fails_after_the_open_timeout() -> None:
    srv, port = _stalling_server(30, None)
    try:
        conn = PsrpConnection(
            "127.0.0.1", port=port, https=False, auth="ntlm", username="u", password="p", open_timeout_s=1
        )
        t0 = time.monotonic()
        err = _run(conn)
        waited = time.monotonic() - t0
    finally:
        srv.shutdown()
    assert "did not open a PowerShell session within 1 s" in str(err)
    assert "integration-status was not started" in str(err)
    assert err.retryable
    assert waited < 20
