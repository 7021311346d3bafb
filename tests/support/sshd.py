"""A real OpenSSH server for tests: ``/usr/sbin/sshd -D -e`` on 127.0.0.1, a free port,
temporary host keys and authorized keys, everything under one temp directory.

Use :func:`start_sshd` (or the ``sshd`` fixture in ``tests/conftest.py``) and call
:meth:`SshdServer.stop` at teardown. Needs root (sshd drops privileges per connection)
and ``ssh-keygen``; tests that use it are marked ``@pytest.mark.sshd``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
_START_TIMEOUT_S = 10.0


def sshd_unavailable_reason() -> str:
    """Why a real sshd cannot run here, or "" when it can."""
    if not Path(SSHD).is_file():
        return f"{SSHD} is not installed"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed"
    if os.geteuid() != 0:
        return "sshd needs root to accept logins from other than its own user"
    return ""


def free_port() -> int:
    """A TCP port nothing listens on right now (racy, good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, *, passphrase: str = "", comment: str = "gmi-test") -> Path:
    """Make an ed25519 key pair at ``path`` (+ ``.pub``) and return ``path``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def fingerprint(public_key: Path) -> str:
    """The ``SHA256:...`` fingerprint of a public key file, as OpenSSH prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


@dataclass
class SshdServer:
    """One running sshd; ``user``/``client_key`` log in, ``host_key_fingerprint`` pins."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    user: str = "root"
    client_key: Path = field(init=False)
    host_key_fingerprint: str = field(init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _generation: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_key = keygen(self.workdir / "client_key")
        self.authorized_keys.write_text("")
        self.authorize(self.client_key.with_suffix(".pub"))
        self._new_host_key()

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "sshd is not running"
        return self._proc.pid

    def authorize(self, public_key: Path) -> None:
        """Let the holder of ``public_key`` log in as ``user``."""
        with self.authorized_keys.open("a") as out:
            out.write(public_key.read_text().strip() + "\n")

    def add_client_key(self, name: str, *, passphrase: str = "", authorize: bool = True) -> Path:
        """A new client key (optionally passphrase-protected), authorized unless told not."""
        key = keygen(self.workdir / name, passphrase=passphrase)
        if authorize:
            self.authorize(key.with_suffix(".pub"))
        return key

    def start(self) -> None:
        # sshd refuses to start without its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self._write_config()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        finally:
            log.close()
        self._wait_listening(log_start)

    def stop(self) -> None:
        """Stop the listener and every connection it forked."""
        if self._proc is None:
            return
        self.drop_connections()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop and start again on the same port, optionally as a "rebuilt" host."""
        self.stop()
        if new_host_key:
            self._new_host_key()
        self.start()

    def drop_connections(self) -> None:
        """Kill every process sshd forked (sessions and their commands): to the client
        this looks like a guest that vanished mid-command. The listener keeps running."""
        for pid in descendants(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _new_host_key(self) -> None:
        self._generation += 1
        key = self.workdir / f"host_key_{self._generation}"
        keygen(key, comment="gmi-test-host")
        self._host_key = key
        self.host_key_fingerprint = fingerprint(key.with_suffix(".pub"))

    def _write_config(self) -> Path:
        config = self.workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    f"HostKey {self._host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    # VERBOSE logs one "Connection from" line per TCP connection:
                    # tests count them to prove the client did not retry.
                    "LogLevel VERBOSE",
                    "MaxStartups 100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        return config

    def _wait_listening(self, log_start: int) -> None:
        # sshd logs "Server listening on ..." after listen(): no probe connection, which
        # would show up in the log that tests count connections in.
        assert self._proc is not None
        ready = f"Server listening on {self.host} port {self.port}".encode()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._proc.returncode}:\n{self.log_text()}")
            if ready in self.log_path.read_bytes()[log_start:]:
                return
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not listen on {self.port} in time:\n{self.log_text()}")


def start_sshd(workdir: Path) -> SshdServer:
    server = SshdServer(workdir)
    server.start()
    return server


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children first found, by parent pid in /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name may hold spaces and parentheses: parse after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
