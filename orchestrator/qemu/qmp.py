"""A minimal asyncio QMP client: greeting, ``qmp_capabilities``, ``execute``.

Only what the lab needs (``system_powerdown``, ``quit``, ``query-status``); a
dependency such as qemu.qmp would be more than the ~60 lines this takes. One
connection per use: qemu serves one QMP client at a time on a socket, so holding a
connection open would lock out every other caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["QmpClient", "QmpError"]


class QmpError(RuntimeError):
    """QMP returned an error, closed unexpectedly, or did not answer in time."""


class QmpClient:
    """Use as ``async with await QmpClient.connect(path) as qmp: await qmp.execute(...)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, socket_path: Path, *, timeout_s: float = 10.0) -> QmpClient:
        """Connect, read the greeting and leave capabilities negotiation mode."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(socket_path), limit=1 << 20), timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise QmpError(f"cannot connect to QMP socket {socket_path}: {exc}") from exc
        client = cls(reader, writer)
        try:
            greeting = await client._read_message(timeout_s)
            _expect_greeting(greeting)
            await client.execute("qmp_capabilities", timeout_s=timeout_s)
        except BaseException:
            await client.close()
            raise
        return client

    async def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout_s: float = 10.0,
        allow_disconnect: bool = False,
    ) -> Any:
        """Run ``command``; return its ``return`` value. Events in between are skipped.

        ``allow_disconnect``: for ``quit``, qemu may close the socket before its reply
        arrives; that counts as success and returns None.
        """
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            while True:
                reply = await self._read_message(timeout_s)
                if "return" in reply or "error" in reply:
                    return _result(command, reply)
        except (ConnectionError, _Disconnected):
            if allow_disconnect:
                return None
            raise

    async def _read_message(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout_s)
        except TimeoutError as exc:
            raise QmpError(f"QMP did not answer within {timeout_s} s") from exc
        if not line:
            raise _Disconnected("QMP connection closed by qemu")
        data: dict[str, Any] = json.loads(line)
        return data

    async def close(self) -> None:
        self._writer.close()
        # qemu may already be gone (after quit); nothing is left to release then.
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> QmpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Disconnected(QmpError):
    """qemu closed the QMP connection (expected after ``quit``)."""


def _expect_greeting(message: dict[str, Any]) -> None:
    if "QMP" not in message:
        raise QmpError(f"unexpected QMP greeting: {message}")


def _result(command: str, reply: dict[str, Any]) -> Any:
    if "error" in reply:
        err = reply["error"]
        raise QmpError(f"QMP {command} failed: {err.get('class')}: {err.get('desc')}")
    return reply["return"]
