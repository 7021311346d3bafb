"""The two ways a transfer's bytes reach the Hyper-V host and back (transfer.py decides
what to move and records where it got to; a channel only moves bytes).

- :class:`SmbChannel`: SMB 3 to the share the spec names (``host.smb_share``), through
  :mod:`orchestrator.hyperv.smb`, in a worker thread.
- :class:`PsrpChannel`: PowerShell Remoting, when the spec names no share. The bytes
  travel as base64 text through two fixed scripts: ``file-write-pieces`` reads them as
  its pipeline input, ``file-read-pieces`` returns them in its result. One call moves
  :data:`CALL_BYTES` in pieces of :data:`PIECE_BYTES`, sized to stay well under what a
  Windows PowerShell 5.1 session accepts by default: one received object at most 10 MB
  (MaximumReceivedObjectSizeMB) and all the data of one command at most 50 MB
  (MaximumReceivedDataSizePerCommandMB; Microsoft's PSSessionConfiguration reference,
  GetMaximumReceivedObjectSize and GetMaximumReceivedDataSizePerCommand). Base64 makes a
  1 MiB piece 1.40 MB of text and a call 11.2 MB; WS-Management base64-encodes the PSRP
  fragments once more, so a byte costs 1.78 bytes on the wire. Each call reports the
  sha256 of the bytes it wrote or read, which the caller compares with its own before it
  counts them as arrived.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import threading
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Protocol, TypeVar

from orchestrator.hyperv.executor import PowerShellExecutor
from orchestrator.hyperv.invoke import run_script
from orchestrator.hyperv.smb import SmbLogin, SmbReader, SmbSession, SmbWriter, outside_share, share_relative
from orchestrator.targets.base import TargetError

PIECE_BYTES = 1 << 20
CALL_BYTES = 8 << 20

T = TypeVar("T")
Confirmed = Callable[[int], None]
"""``confirmed(end)``: every byte before ``end`` arrived and was confirmed (in order). It
may be called from a worker thread."""


class RemoteWriter(Protocol):
    """A host file open for writing, cut at the offset it was opened at. No more than the
    ``window`` it was opened with is ever sent ahead of the host's confirmation."""

    async def put(self, src: BinaryIO, offset: int, length: int, confirmed: Confirmed) -> None:
        """Write ``length`` bytes of ``src`` (read from ``offset``) at ``offset``; returns
        once the host confirmed them all."""
        ...

    async def close(self) -> None: ...


class RemoteReader(Protocol):
    async def get(
        self, offset: int, length: int, take: Callable[[bytes], None], confirmed: Confirmed
    ) -> None:
        """Read ``length`` bytes at ``offset``, handing them to ``take`` in order."""
        ...

    async def close(self) -> None: ...


class Channel(Protocol):
    name: str
    """``smb`` or ``psrp`` (recorded with each transfer's checkpoints)."""

    def check_path(self, host_path: str) -> None:
        """Raise a TargetError now if this channel cannot reach ``host_path``."""
        ...

    async def open_writer(self, host_path: str, offset: int, *, window: int) -> RemoteWriter: ...

    async def open_reader(self, host_path: str, *, window: int) -> RemoteReader: ...

    async def close(self) -> None: ...


# -- PowerShell Remoting -------------------------------------------------------------------


class TransferDamagedError(TargetError):
    """The host reports other bytes than the ones sent (or read) in a call."""


class PsrpChannel:
    name = "psrp"

    def __init__(self, executor: PowerShellExecutor, call_timeout_s: float) -> None:
        self.executor = executor
        self.call_timeout_s = call_timeout_s

    def check_path(self, host_path: str) -> None:
        return None

    async def open_writer(self, host_path: str, offset: int, *, window: int) -> RemoteWriter:
        return _PsrpWriter(self, host_path, min(CALL_BYTES, window))

    async def open_reader(self, host_path: str, *, window: int) -> RemoteReader:
        return _PsrpReader(self, host_path, min(CALL_BYTES, window))

    async def close(self) -> None:
        return None


class _PsrpWriter:
    def __init__(self, channel: PsrpChannel, host_path: str, call_bytes: int) -> None:
        self.channel = channel
        self.host_path = host_path
        self.call_bytes = call_bytes

    async def put(self, src: BinaryIO, offset: int, length: int, confirmed: Confirmed) -> None:
        pos, end = offset, offset + length
        while True:  # once at least: a call with no pieces makes an empty file
            n = min(self.call_bytes, end - pos)
            pieces, digest = await asyncio.to_thread(_encode, src, pos, n)
            got = await run_script(
                self.channel.executor,
                "file-write-pieces",
                {"Path": self.host_path, "Offset": pos},
                timeout_s=self.channel.call_timeout_s,
                record=False,
                input=pieces,
            )
            facts = got.facts
            reported = (facts.get("written"), facts.get("sha256"), facts.get("size"))
            if reported != (str(n), digest, str(pos + n)):
                raise TransferDamagedError(
                    f"the host wrote other bytes to {self.host_path} at {pos} than were sent "
                    f"({facts.get('written')} bytes, sha256 {facts.get('sha256')}; sent {n}, {digest})",
                    hint="resume: the transfer continues from its last verified offset",
                    retryable=True,
                )
            pos += n
            confirmed(pos)
            if pos >= end:
                return

    async def close(self) -> None:
        return None


class _PsrpReader:
    def __init__(self, channel: PsrpChannel, host_path: str, call_bytes: int) -> None:
        self.channel = channel
        self.host_path = host_path
        self.call_bytes = call_bytes

    async def get(
        self, offset: int, length: int, take: Callable[[bytes], None], confirmed: Confirmed
    ) -> None:
        pos, end = offset, offset + length
        while pos < end:
            n = min(self.call_bytes, end - pos)
            got = await run_script(
                self.channel.executor,
                "file-read-pieces",
                {"Path": self.host_path, "Offset": pos, "Length": n, "PieceBytes": PIECE_BYTES},
                timeout_s=self.channel.call_timeout_s,
                record=False,
            )
            data = _decode(self.host_path, pos, got.artifacts)
            if len(data) != n or hashlib.sha256(data).hexdigest() != got.facts.get("sha256"):
                raise TransferDamagedError(
                    f"{self.host_path} at {pos}: {len(data)} of {n} bytes arrived, or not the bytes "
                    "the host read (sha256 differs)",
                    hint="resume: the transfer continues from its last verified offset; a file that "
                    "shrank on the host changed during the transfer",
                    retryable=True,
                )
            take(data)
            pos += n
            confirmed(pos)

    async def close(self) -> None:
        return None


def _encode(src: BinaryIO, offset: int, length: int) -> tuple[list[str], str]:
    src.seek(offset)
    digest = hashlib.sha256()
    pieces = []
    left = length
    while left > 0:
        block = src.read(min(PIECE_BYTES, left))
        if not block:
            raise TargetError("the local file shrank while it was sent")
        digest.update(block)
        pieces.append(base64.b64encode(block).decode("ascii"))
        left -= len(block)
    return pieces, digest.hexdigest()


def _decode(host_path: str, offset: int, pieces: list[dict[str, object]]) -> bytes:
    try:
        return b"".join(base64.b64decode(str(p["data"]), validate=True) for p in pieces)
    except (KeyError, binascii.Error) as exc:
        raise TransferDamagedError(
            f"the host's answer for {host_path} at {offset} is not base64 pieces: {exc}", retryable=True
        ) from None


# -- SMB -------------------------------------------------------------------------------------


class SmbChannel:
    """An :class:`SmbSession` driven from the event loop: each call in a worker thread,
    stopped at its next request when the caller is cancelled."""

    name = "smb"

    def __init__(self, session: SmbSession) -> None:
        self.session = session

    def check_path(self, host_path: str) -> None:
        if share_relative(self.session.share_folder, host_path) is None:
            raise outside_share(self.session.login, self.session.share_folder, host_path)

    async def open_writer(self, host_path: str, offset: int, *, window: int) -> RemoteWriter:
        opened = await _threaded(lambda c: self.session.open_writer(host_path, offset, window=window))
        return _SmbWriter(opened)

    async def open_reader(self, host_path: str, *, window: int) -> RemoteReader:
        return _SmbReader(await _threaded(lambda c: self.session.open_reader(host_path, window=window)))

    async def close(self) -> None:
        await asyncio.to_thread(self.session.close)


class _SmbWriter:
    def __init__(self, smb: SmbWriter) -> None:
        self.smb = smb

    async def put(self, src: BinaryIO, offset: int, length: int, confirmed: Confirmed) -> None:
        await _threaded(lambda cancel: self.smb.put(src, offset, length, confirmed, cancel))

    async def close(self) -> None:
        await _threaded(lambda c: self.smb.close())


class _SmbReader:
    def __init__(self, smb: SmbReader) -> None:
        self.smb = smb

    async def get(
        self, offset: int, length: int, take: Callable[[bytes], None], confirmed: Confirmed
    ) -> None:
        await _threaded(lambda cancel: self.smb.get(offset, length, take, confirmed, cancel))

    async def close(self) -> None:
        await _threaded(lambda c: self.smb.close())


async def _threaded(fn: Callable[[threading.Event], T]) -> T:
    """``fn(cancel)`` in a worker thread; a cancelled caller sets ``cancel`` and waits for
    the thread to stop (at its next request), so nothing of it outlives the call."""
    cancel = threading.Event()
    task: Awaitable[T] = asyncio.ensure_future(asyncio.to_thread(fn, cancel))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):  # the cancellation is what the caller sees
            await task
        raise


async def open_channel(
    executor: PowerShellExecutor, login: SmbLogin | None, *, call_timeout_s: float
) -> Channel:
    """The channel for a transfer: SMB when the spec names a share, else PowerShell
    Remoting. The share's folder is read from the host (``smb-share-path``)."""
    if login is None:
        return PsrpChannel(executor, call_timeout_s)
    found = await run_script(executor, "smb-share-path", {"Name": login.share}, timeout_s=call_timeout_s)
    if found.exit != 0:
        raise TargetError(
            f"{found.message} (host.smb_share)",
            hint=f"create it on the host (New-SmbShare -Name '{login.share}' -Path <the folder holding "
            "vm_path and export_path>, docs/hyperv.md) or remove host.smb_share",
            retryable=False,
        )
    session = SmbSession(login, found.facts["smb.path"])
    await asyncio.to_thread(session.connect)
    return SmbChannel(session)
