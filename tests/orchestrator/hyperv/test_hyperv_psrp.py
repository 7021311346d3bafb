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
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
        asyncio.run(ex.run(script_text("vm-probe"), {"VmName": "x", "BuildId": "b"}, timeout_s=20))
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


class _FakePool:
    def __init__(self, wsman: object) -> None:
        pass

    def __enter__(self) -> _FakePool:
        return self

    def __exit__(self, *a: object) -> None:
        return


class _FakeWsman:
    def __enter__(self) -> _FakeWsman:
        return self

    def __exit__(self, *a: object) -> None:
        return


class _Streams:
    error: list[object] = []


class _NeverEnding:
    """A pipeline that keeps running until stopped; records what it was given."""

    instances: list[_NeverEnding] = []

    def __init__(self, pool: object) -> None:
        self.state = psrp.PSInvocationState.NOT_STARTED
        self.scripts: list[str] = []
        self.params: dict[str, object] = {}
        self.stopped = False
        self.streams = _Streams()
        self.output: list[object] = []
        self.had_errors = False
        _NeverEnding.instances.append(self)

    def add_script(self, text: str) -> None:
        self.scripts.append(text)

    def add_parameters(self, params: dict[str, object]) -> None:
        self.params.update(params)

    def begin_invoke(self) -> None:
        self.state = psrp.PSInvocationState.RUNNING

    def poll_invoke(self, timeout: int | None = None) -> None:
        threading.Event().wait(0.05)

    def stop(self) -> None:
        self.stopped = True
        self.state = psrp.PSInvocationState.STOPPED


def test_deadline_stops_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psrp, "PowerShell", _NeverEnding)
    monkeypatch.setattr(psrp, "RunspacePool", _FakePool)
    monkeypatch.setattr(PsrpExecutor, "_wsman", lambda self, t: _FakeWsman())
    ex = PsrpExecutor(PsrpConnection("hv01"))
    params = {"VmName": "a'; $(evil)", "BuildId": "b"}
    with pytest.raises(CallTimeoutError, match="vm-probe did not finish within 0.3 s"):
        asyncio.run(ex.run(script_text("vm-probe"), params, timeout_s=0.3))
    ps = _NeverEnding.instances[-1]
    assert ps.stopped
    assert ps.scripts == [script_text("vm-probe")]  # fixed text, exactly
    assert ps.params == params  # values only as parameters
