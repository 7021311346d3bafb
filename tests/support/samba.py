"""A real SMB 3 server for tests: Debian's Samba (``smbd``) on 127.0.0.1, a free port,
its own configuration, private/state/lock/cache directories and password database, all
under one temporary directory, and one share (``GMI``) of a folder there.

The test user is this machine's own account (Samba maps every SMB user to a Unix
account) with a random password in the private database (``smbpasswd -c CONF -a``),
never the system's. Use :func:`start_samba` (or the ``samba`` fixture in
``tests/orchestrator/hyperv/test_hyperv_transfer.py``) and :meth:`SambaServer.stop` at
the end. Needs root (smbd becomes the logged-in user for each connection).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sshd import descendants, free_port

SMBD = "/usr/sbin/smbd"
SMBPASSWD = "/usr/bin/smbpasswd"
_START_TIMEOUT_S = 20.0


def samba_unavailable_reason() -> str:
    """Why a real Samba cannot run here, or "" when it can."""
    for tool in (SMBD, SMBPASSWD):
        if not Path(tool).is_file():
            return f"{tool} is not installed (apt-get install samba smbclient; scripts/setup.sh does)"
    if os.geteuid() != 0:
        return "smbd needs root to serve a share as the logged-in user"
    return ""


@dataclass
class SambaServer:
    workdir: Path
    share: str = "GMI"
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=getpass.getuser)
    password: str = field(default_factory=lambda: "Gmi-" + secrets.token_urlsafe(12), repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def share_dir(self) -> Path:
        return self.workdir / "share"

    @property
    def config(self) -> Path:
        return self.workdir / "smb.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "smbd.log"

    @property
    def unc(self) -> str:
        return f"//{self.host}/{self.share}"

    def start(self) -> None:
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log", "share"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self._write_config()
        subprocess.run(
            [SMBPASSWD, "-c", str(self.config), "-a", "-s", self.user],
            input=f"{self.password}\n{self.password}\n".encode(),
            check=True,
            capture_output=True,
        )
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [SMBD, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_listening()

    def stop(self) -> None:
        """Stop the server and every connection process it forked."""
        if self._proc is None:
            return
        for pid in descendants(self._proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def smbclient(self, command: str, *, protection: str = "sign") -> subprocess.CompletedProcess[str]:
        """The Samba CLI against this server (``put``, ``get``, ``ls`` ...); the password
        travels in an authentication file, not on the command line."""
        auth = self.workdir / "smbclient.auth"
        auth.write_text(f"username = {self.user}\npassword = {self.password}\n")
        auth.chmod(0o600)
        return subprocess.run(
            [
                shutil.which("smbclient") or "smbclient",
                "-p",
                str(self.port),
                "-A",
                str(auth),
                f"--client-protection={protection}",
                self.unc,
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> None:
        w = self.workdir
        self.config.write_text(
            "\n".join(
                [
                    "[global]",
                    "  server role = standalone server",
                    "  workgroup = GMITEST",
                    "  netbios name = GMITEST",
                    f"  passdb backend = tdbsam:{w / 'private' / 'passdb.tdb'}",
                    f"  private dir = {w / 'private'}",
                    f"  lock directory = {w / 'lock'}",
                    f"  state directory = {w / 'state'}",
                    f"  cache directory = {w / 'cache'}",
                    f"  pid directory = {w / 'pid'}",
                    f"  ncalrpc dir = {w / 'ncalrpc'}",
                    f"  log file = {w / 'log' / 'log.%m'}",
                    "  log level = 1",
                    f"  smb ports = {self.port}",
                    f"  interfaces = {self.host}",
                    "  bind interfaces only = yes",
                    "  disable netbios = yes",
                    "  server min protocol = SMB3",
                    "  load printers = no",
                    "  printing = bsd",
                    "  printcap name = /dev/null",
                    "  disable spoolss = yes",
                    "  map to guest = never",
                    "",
                    f"[{self.share}]",
                    f"  path = {self.share_dir}",
                    "  read only = no",
                    f"  valid users = {self.user}",
                    "",
                ]
            )
        )

    def _wait_listening(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"smbd exited with {self._proc.returncode}:\n{self.log_text()}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"smbd did not listen on {self.port} in time:\n{self.log_text()}")


def start_samba(workdir: Path) -> SambaServer:
    server = SambaServer(workdir)
    server.start()
    return server
