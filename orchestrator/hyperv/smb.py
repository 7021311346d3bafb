"""SMB 3 to a share on the Hyper-V host: the fast channel of a transfer.

Used when the spec names ``host.smb_share``. The share serves a folder of the host
(``Get-SmbShare``, read once per transfer by the ``smb-share-path`` script); a host path
in that folder is reached as ``\\\\HOST\\SHARE\\<the rest of the path>``, and a path
outside it is refused, naming both. The login is the spec's (``host.username`` and
``host.password``, NTLM or Kerberos as ``host.auth`` says); every message is signed, and
encrypted unless ``host.smb_encrypt`` is false.

smbprotocol's ``smbclient`` (by pypsrp's author) opens the session, the tree and the file
(``register_session``, ``open_file``, ``makedirs``, ``truncate``) with its own connection
cache per transfer. Its file object sends one request and waits for its answer; here the
writes and reads go through the same open file with smbprotocol's out-of-band send
(``Open.write``/``Open.read`` with ``send=False``, ``Connection.send``, the receive
function), several requests in flight, as the Samba CLI does: the wire and the server
are never idle waiting for the client to frame the next one. smbprotocol is synchronous:
everything here runs in a worker thread (the caller's ``asyncio.to_thread``) and stops
at the next request when ``cancel`` is set.
"""

from __future__ import annotations

import contextlib
import ntpath
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import smbclient
from smbprotocol.exceptions import (
    AccessDenied,
    BadNetworkName,
    DiskFull,
    LogonFailure,
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
    WrongPassword,
)

from orchestrator.targets.base import TargetError

PIECE_BYTES = 4 << 20
"""One SMB2 READ or WRITE at most (the negotiated maximum is 8 MiB on Samba and Windows):
smbprotocol frames each request in Python, so fewer, larger ones cost less CPU."""
IN_FLIGHT_BYTES = 16 << 20
"""At most this much is sent ahead of the server's answers (four requests of 4 MiB), and
never more than the caller's window (a transfer's chunk)."""
_CREDIT_BYTES = 65536  # one SMB2 credit per 64 KiB of payload (MS-SMB2 3.1.5.2)
_MAX_CREDIT_REQUEST = 8192


def credit_charge(nbytes: int) -> int:
    return (max(0, nbytes - 1) // _CREDIT_BYTES) + 1


@dataclass(frozen=True, slots=True)
class SmbLogin:
    """Where and how to reach the share. Never logged (``repr`` hides the password)."""

    server: str
    share: str
    port: int = 445
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth: Literal["negotiate", "ntlm", "kerberos"] = "negotiate"
    encrypt: bool = True
    connection_timeout_s: int = 30

    @property
    def where(self) -> str:
        return f"\\\\{self.server}\\{self.share} (TCP {self.port})"


def share_relative(share_folder: str, host_path: str) -> str | None:
    """``host_path`` relative to the folder a share serves, or None when outside it
    (Windows paths: case-insensitive, ``..`` resolved first)."""
    folder = ntpath.normpath(share_folder).rstrip("\\")
    path = ntpath.normpath(host_path)
    if path.casefold().startswith(folder.casefold() + "\\") and len(path) > len(folder) + 1:
        return path[len(folder) + 1 :]
    return None


def outside_share(login: SmbLogin, share_folder: str, host_path: str) -> TargetError:
    return TargetError(
        f"{host_path} is outside the folder SMB share '{login.share}' serves ({share_folder}): "
        "a transfer through the share cannot reach it",
        hint=f"put host.vm_path, host.export_path and host.iso_path under {share_folder} (or share "
        "a folder that holds them: New-SmbShare, docs/hyperv.md), or remove host.smb_share to "
        "transfer over PowerShell Remoting",
        retryable=False,
    )


class SmbSession:
    """One connection and session to the share, for one transfer (thread-bound calls)."""

    def __init__(self, login: SmbLogin, share_folder: str) -> None:
        self.login = login
        self.share_folder = share_folder
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SmbSession({self.login.where})"

    def unc(self, host_path: str) -> str:
        rel = share_relative(self.share_folder, host_path)
        if rel is None:
            raise outside_share(self.login, self.share_folder, host_path)
        return f"\\\\{self.login.server}\\{self.login.share}\\{rel}"

    def _kwargs(self) -> dict[str, Any]:
        lg = self.login
        return {
            "username": lg.username,
            "password": lg.password,
            "port": lg.port,
            "encrypt": lg.encrypt or None,  # None: as the share says (a share can demand it)
            "connection_timeout": lg.connection_timeout_s,
            "connection_cache": self._cache,
            "auth_protocol": lg.auth,
        }

    def connect(self) -> None:
        with smb_errors(self.login, "logging in to"):
            smbclient.register_session(self.login.server, **self._kwargs())

    def list_top(self) -> list[str]:
        """Log in and list the share's top folder (what `gmi-fsm hyperv check` tries)."""
        self.connect()
        top = f"\\\\{self.login.server}\\{self.login.share}"
        with smb_errors(self.login, "listing"):
            return list(smbclient.listdir(top, **self._kwargs()))

    def open_writer(self, host_path: str, offset: int, *, window: int = IN_FLIGHT_BYTES) -> SmbWriter:
        """The file at ``host_path`` opened for writing and cut at ``offset`` (0: made anew;
        its folder is made when missing); at most ``window`` bytes in flight."""
        unc = self.unc(host_path)
        with smb_errors(self.login, f"opening {host_path} for writing through"):
            if offset == 0:
                parent = ntpath.dirname(unc)
                if share_relative(self.share_folder, ntpath.dirname(host_path)) is not None:
                    smbclient.makedirs(parent, exist_ok=True, **self._kwargs())
                raw = smbclient.open_file(unc, mode="wb", buffering=0, **self._kwargs())
            else:
                raw = smbclient.open_file(unc, mode="r+b", buffering=0, **self._kwargs())
                raw.truncate(offset)
        return SmbWriter(self.login, host_path, raw, window)

    def open_reader(self, host_path: str, *, window: int = IN_FLIGHT_BYTES) -> SmbReader:
        unc = self.unc(host_path)
        with smb_errors(self.login, f"opening {host_path} for reading through"):
            raw = smbclient.open_file(unc, mode="rb", buffering=0, share_access="r", **self._kwargs())
        return SmbReader(self.login, host_path, raw, window)

    def close(self) -> None:
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)


class _Pipeline:
    """Requests in flight on one open file, oldest first, within the server's credits."""

    def __init__(self, login: SmbLogin, host_path: str, raw: Any, window: int) -> None:
        self.login = login
        self.host_path = host_path
        self.raw = raw
        fd = raw.fd
        self._open = fd
        self._conn = fd.connection
        self._ids = (fd.tree_connect.session.session_id, fd.tree_connect.tree_connect_id)
        multi = getattr(self._conn, "supports_multi_credit", True)
        self.window = min(window, IN_FLIGHT_BYTES)
        # Two requests in flight at least, or the wire idles while the next one is framed.
        self.piece = max(_CREDIT_BYTES, min(PIECE_BYTES if multi else _CREDIT_BYTES, self.window // 2))
        self.window = max(self.window, self.piece)
        self._pending: deque[tuple[Any, Callable[[Any], Any], int]] = deque()
        self._in_flight = 0

    def _credits(self) -> int:
        window = self._conn.sequence_window
        return int(window["high"] - window["low"])

    def room_for(self, nbytes: int) -> int:
        """How many of ``nbytes`` the next request may carry now (0: wait for an answer)."""
        want = min(nbytes, self.piece)
        if self._in_flight + want > self.window:
            return 0
        have = self._credits()
        if credit_charge(want) <= have:
            return want
        return 0 if self._pending else min(want, max(1, have) * _CREDIT_BYTES)

    def send(self, message: Any, receive: Callable[[Any], Any], nbytes: int) -> None:
        charge = credit_charge(nbytes)
        # Ask for what this request uses and what keeps the window open.
        target = (self.window // self.piece) * credit_charge(self.piece)
        ask = min(_MAX_CREDIT_REQUEST, charge + max(0, target - (self._credits() - charge)))
        request = self._conn.send(message, self._ids[0], self._ids[1], credit_request=ask)
        self._pending.append((request, receive, nbytes))
        self._in_flight += nbytes

    def busy(self) -> bool:
        return bool(self._pending)

    def oldest(self) -> tuple[Any, int]:
        request, receive, nbytes = self._pending.popleft()
        self._in_flight -= nbytes
        return receive(request), nbytes

    def drain(self) -> None:
        """Wait for every answer still due (after a failure: so none arrives later)."""
        while self._pending:
            try:
                self.oldest()
            except SMBException:
                continue

    def close(self) -> None:
        self.drain()
        with smb_errors(self.login, f"closing {self.host_path} on"):
            self.raw.close()


class SmbWriter(_Pipeline):
    def put(
        self,
        src: BinaryIO,
        offset: int,
        length: int,
        confirmed: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        """Write ``length`` bytes of ``src`` (from ``offset``) at ``offset``; returns once
        the server acknowledged every byte. ``confirmed(end)``: the bytes up to ``end``
        are acknowledged (called in order, as answers arrive)."""
        with smb_errors(self.login, f"writing {self.host_path} through"):
            try:
                self._write(src, offset, length, confirmed, cancel)
            except BaseException:
                self.drain()
                raise

    def _write(
        self,
        src: BinaryIO,
        offset: int,
        length: int,
        confirmed: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        src.seek(offset)
        done = offset
        pos, end = offset, offset + length
        while pos < end or self.busy():
            if cancel.is_set():
                raise _Cancelled
            n = self.room_for(end - pos) if pos < end else 0
            if n:
                data = src.read(n)
                if len(data) != n:
                    raise TargetError(f"the local file shrank while it was sent to {self.host_path}")
                message, receive = self._open.write(data, offset=pos, send=False)
                self.send(message, receive, n)
                pos += n
                continue
            written, expected = self.oldest()
            if written != expected:
                raise TargetError(
                    f"{self.login.where} wrote {written} of {expected} bytes to {self.host_path}",
                    retryable=True,
                )
            done += written
            confirmed(done)


class SmbReader(_Pipeline):
    def get(
        self,
        offset: int,
        length: int,
        take: Callable[[bytes], None],
        confirmed: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        """Read ``length`` bytes at ``offset``, handing them to ``take`` in order;
        ``confirmed(end)`` after ``take`` had the bytes up to ``end``."""
        with smb_errors(self.login, f"reading {self.host_path} through"):
            try:
                self._read(offset, length, take, confirmed, cancel)
            except BaseException:
                self.drain()
                raise

    def _read(
        self,
        offset: int,
        length: int,
        take: Callable[[bytes], None],
        confirmed: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        pos, end = offset, offset + length
        done = offset
        while pos < end or self.busy():
            if cancel.is_set():
                raise _Cancelled
            n = self.room_for(end - pos) if pos < end else 0
            if n:
                message, receive = self._open.read(pos, n, send=False)
                self.send(message, receive, n)
                pos += n
                continue
            data, expected = self.oldest()
            if len(data) != expected:
                raise TargetError(
                    f"{self.host_path} ended early on {self.login.where} "
                    f"({len(data)} of {expected} bytes): it changed during the transfer",
                    retryable=True,
                )
            take(data)
            done += len(data)
            confirmed(done)


class _Cancelled(Exception):
    """The transfer was stopped (Ctrl-C, the step's deadline): the thread returns."""


@contextlib.contextmanager
def smb_errors(login: SmbLogin, doing: str) -> Iterator[None]:
    """smbprotocol's failures as TargetErrors that say what, where and how to fix it."""
    try:
        yield
    except (TargetError, _Cancelled):
        raise
    except (SMBException, OSError, ValueError, TimeoutError) as exc:
        raise smb_failure(login, doing, exc) from exc


def smb_failure(login: SmbLogin, doing: str, exc: BaseException) -> TargetError:
    where = login.where
    status = exc.ntstatus if isinstance(exc, SMBOSError) else getattr(exc, "status", None)
    cause = _cause(exc)
    text = str(exc).splitlines()[0][:300]
    if isinstance(cause, LogonFailure | WrongPassword | SMBAuthenticationError) or status in (
        0xC000006D,  # STATUS_LOGON_FAILURE
        0xC000006A,  # STATUS_WRONG_PASSWORD
    ):
        return TargetError(
            f"{where} refused the SMB login of {login.username or 'this machine'} while {doing} it: {text}",
            hint="host.username and host.password log in to SMB as to WinRM: check them, and that the "
            "account may use the share (Get-SmbShareAccess)",
            retryable=False,
        )
    if isinstance(cause, BadNetworkName) or status == 0xC00000CC:
        return TargetError(
            f"the host has no SMB share '{login.share}' ({where}): {text}",
            hint="create it (New-SmbShare, docs/hyperv.md) or remove host.smb_share",
            retryable=False,
        )
    if isinstance(cause, AccessDenied) or status == 0xC0000022:
        return TargetError(
            f"{where} denied access while {doing} it: {text}",
            hint="give the account change access to the share and to its folder "
            "(Grant-SmbShareAccess -AccessRight Change, and the folder's NTFS rights)",
            retryable=False,
        )
    if isinstance(cause, DiskFull) or status == 0xC000007F:
        return TargetError(
            f"the host's disk is full while {doing} {where}: {text}",
            hint="free space on the drive of the share's folder, then resume",
            retryable=False,
        )
    if isinstance(exc, ValueError) and "Failed to connect" in str(exc):
        return TargetError(
            f"cannot reach the host's SMB server at {where}: {text}",
            hint="check host.host and host.smb_port, that the share's server listens and that the "
            "firewall lets TCP 445 in from this machine (docs/hyperv.md)",
            retryable=True,
        )
    if isinstance(exc, SMBConnectionClosed | TimeoutError | OSError):
        return TargetError(
            f"the SMB connection to {where} was lost while {doing} it: {text}",
            hint="resume (`gmi-fsm run --resume ID`): the transfer continues from its last verified offset",
            retryable=True,
        )
    if isinstance(cause, SMBResponseException):
        return TargetError(f"{where} answered {text} while {doing} it", retryable=True)
    return TargetError(f"SMB failed while {doing} {where}: {type(exc).__name__}: {text}", retryable=True)


def _cause(exc: BaseException) -> BaseException:
    """smbclient wraps a server's answer in SMBOSError; the answer is its cause."""
    seen: BaseException = exc
    while seen.__cause__ is not None and not isinstance(seen, SMBResponseException):
        seen = seen.__cause__
    return seen
