"""A TCP relay for tests: listens on 127.0.0.1, forwards every connection to a target,
counts the bytes each way and can hold them to a rate.

Tests put it between gmi-fsm and a real server (Samba) to measure, independently of
what gmi-fsm reports, how many bytes a resumed transfer sent, and to slow a transfer
down enough that a ``kill -9`` lands in the middle of it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

from tests.support.sshd import free_port

_BLOCK = 64 * 1024


@dataclass
class TcpRelay:
    target: tuple[str, int]
    rate_bytes_per_s: float = 0.0
    """Each direction's limit (0: none)."""
    port: int = field(default_factory=free_port)
    to_server: int = 0
    to_client: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _listener: socket.socket | None = field(default=None, repr=False)
    _sockets: list[socket.socket] = field(default_factory=list, repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> TcpRelay:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self.to_server = self.to_client = 0

    def drop_connections(self) -> None:
        with self._lock:
            socks, self._sockets = self._sockets, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
        self.drop_connections()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "to_server"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "to_client"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counter: str) -> None:
        started, moved = time.monotonic(), 0
        try:
            while block := src.recv(_BLOCK):
                if self.rate_bytes_per_s:
                    due = started + (moved + len(block)) / self.rate_bytes_per_s
                    time.sleep(max(0.0, due - time.monotonic()))
                dst.sendall(block)
                moved += len(block)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(block))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
