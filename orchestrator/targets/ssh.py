"""The guest target: runs shell commands in the guest VM over one SSH connection.

One asyncssh connection per guest is opened lazily and reused for every command (a
new connection per command costs a handshake, and a guest whose host keys were just
deleted accepts no new connection at all). The host key is pinned on first use
(see :mod:`orchestrator.targets.host_keys`). Secrets (key passphrase, password) arrive
resolved; they are kept out of reprs, logs and every error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shlex
from collections.abc import Awaitable
from pathlib import Path

import asyncssh

from orchestrator.stepcontext import current_attempt
from orchestrator.targets.base import CommandResult, OutputSink, TargetError
from orchestrator.targets.command_ids import COMMAND_ID_VAR, KILL_TAGGED, stop_tagged_command
from orchestrator.targets.host_keys import (
    HOST_KEY_ALGORITHM_FACT,
    HOST_KEY_FACT,
    HostKeyPin,
    NewHostKeyCallback,
    trust_no_stored_keys,
)
from states.steps import Command

_UPLOAD_CHUNK = 256 * 1024
_UPLOAD_IN_FLIGHT = 8  # SFTP writes awaited one by one would cost a round trip each
_STDERR_HEAD = 2048  # enough to recognise a sudo refusal; never the whole stream
_SUDO_REFUSALS = (
    b"a password is required",
    b"a terminal is required",
    b"is not in the sudoers file",
    b"may not run sudo",
)
_BACKOFF_FIRST_S = 0.25
_BACKOFF_MAX_S = 5.0

# Raised by asyncssh/asyncio while reaching a guest that is not (yet) up: worth retrying.
_TRANSIENT = (OSError, TimeoutError, asyncssh.ConnectionLost, asyncssh.DisconnectError)


def remote_command_line(command: Command, *, command_id: str = "") -> str:
    """The exact line sent to the guest for a ``shell`` command.

    ``GMI_COMMAND_ID=<id> sh -c <script> gmi <args...>`` (with sudo:
    ``sudo -n -- env GMI_COMMAND_ID=<id> sh -c ...``), every element ``shlex.quote``'d,
    so arguments reach the script verbatim as ``"$1"``... whatever they contain.
    ``sudo -n`` never prompts: a missing NOPASSWD rule fails at once instead of hanging.
    The id is set after sudo, which would reset it.
    """
    if command.kind != "shell":
        raise TargetError(
            f"the guest SSH target runs shell commands only, not {command.kind!r}",
            hint="send PowerShell scripts and host operations to the host target",
        )
    argv = ["sh", "-c", command.text, "gmi", *command.args]
    line = " ".join(shlex.quote(part) for part in argv)
    if not command_id:
        return " ".join(shlex.quote(p) for p in ["sudo", "-n", "--", *argv]) if command.sudo else line
    if command.sudo:
        # sudo resets the environment: the id goes in after it, through env(1).
        argv = ["sudo", "-n", "--", "env", f"{COMMAND_ID_VAR}={command_id}", *argv]
        return " ".join(shlex.quote(part) for part in argv)
    # Without sudo, a shell assignment prefix sets it: one program start fewer than
    # env(1) on every command (the remote login shell reads this line, and execs sh in
    # its place: one simple command, no fork).
    #
    # The sh start that remains (0.5-0.7 ms a command, docs/performance.md) is kept on
    # purpose, even for a script without arguments. Sending the script itself to the
    # login shell (`GMI_COMMAND_ID=<id>; export GMI_COMMAND_ID; <script>`) was measured
    # and rejected:
    # - /proc/PID/environ is the environment a process was exec'd with: `export` tags
    #   the programs the script starts, never the shell running it nor its subshells
    #   (durable()'s `( set -e ... )`). A timed-out or cancelled script looping on
    #   builtins would escape KILL_TAGGED, and after its tagged children are killed
    #   the untagged shell would go on with the rest of the script.
    # - The script would run in the user's login shell (bash on our guests, anything on
    #   a Hyper-V guest), not POSIX sh: bash outside POSIX mode drops `set -e` inside
    #   `$(...)`, its echo does not expand backslashes as dash's does, the ~/.bashrc that
    #   bash sources for SSH commands could define functions and options the script
    #   would see, and `$0` changes. The scripts are written and tested for sh.
    # An `exec sh -c ...` form gains nothing: bash already execs a lone simple command.
    return f"{COMMAND_ID_VAR}={shlex.quote(command_id)} {line}"


class _HideCommandLines(logging.Filter):
    """asyncssh logs every exec'd command line at INFO, and ours carry ``secret_args``
    in clear: keep the record, drop the line (the engine records commands masked)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.endswith("Command: %s"):
            record.args = ("<not logged here: recorded by the engine, secrets masked>",)
        return True


logging.getLogger("asyncssh").addFilter(_HideCommandLines())


class _Secret:
    """A credential that never shows itself (repr, str, tracebacks with locals)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class _GuestClient(asyncssh.SSHClient):
    """Per-connection callbacks: the host-key pin, and noticing the connection died."""

    def __init__(self, pin: HostKeyPin) -> None:
        self._pin = pin
        self.lost = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._pin.accepts(key)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class _CommandSession(asyncssh.SSHClientSession[bytes]):
    """Forwards one command's output to the sink as it arrives and records its end.

    Nothing is buffered here: each SSH packet goes straight to the sink, and asyncssh
    reopens the channel window as packets are delivered, so memory stays bounded.
    """

    def __init__(self, sink: OutputSink, *, keep_stderr_head: bool) -> None:
        self._sink = sink
        self._keep_head = keep_stderr_head
        self.stderr_head = b""
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.lost: Exception | None = None
        self.sink_error: BaseException | None = None
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def opened(self) -> bool:
        """Whether the channel opened (and so the command may have been started)."""
        return self._chan is not None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        is_stderr = datatype == asyncssh.EXTENDED_DATA_STDERR
        if is_stderr and self._keep_head and len(self.stderr_head) < _STDERR_HEAD:
            self.stderr_head = (self.stderr_head + data)[:_STDERR_HEAD]
        try:
            self._sink("stderr" if is_stderr else "stdout", data)
        except Exception as exc:
            # An exception here would tear down the whole connection: stop only this
            # command and re-raise the sink's error from run().
            self.sink_error = exc
            if self._chan is not None:
                self._chan.close()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc
        if not self.done.done():
            self.done.set_result(None)


class SshTarget:
    """A guest VM reached over SSH. Implements :class:`~orchestrator.targets.base.Target`.

    Give a private key file (``key_path``, optionally with ``key_passphrase``) and/or a
    ``password``. ``pinned_fingerprint`` is the host key recorded by an earlier run
    (``None``: trust on first use and report it through ``on_new_host_key``).
    """

    name = "guest"

    def __init__(
        self,
        host: str,
        *,
        user: str,
        on_new_host_key: NewHostKeyCallback | None = None,
        port: int = 22,
        key_path: str | Path | None = None,
        key_passphrase: str | None = None,
        password: str | None = None,
        pinned_fingerprint: str | None = None,
        pinned_algorithm: str | None = None,
        connect_timeout_s: float = 15.0,
        reconnect_timeout_s: float = 300.0,
        keepalive_interval_s: float = 15.0,
        keepalive_count_max: int = 4,
        kill_grace_s: float = 3.0,
    ) -> None:
        if key_path is None and not password:
            raise ValueError("SshTarget needs a private key file or a password")
        self._host = host
        self._port = port
        self._user = user
        self._key_path = Path(key_path) if key_path is not None else None
        self._passphrase = _Secret(key_passphrase) if key_passphrase else None
        self._password = _Secret(password) if password else None
        self._on_new_host_key = on_new_host_key
        # A key pinned on first use is also reported as facts in the result of the
        # command during whose login it was seen: the engine records them (targets
        # never write to the event log themselves).
        self._unreported: dict[str, str] = {}
        self._pin = HostKeyPin(pinned_fingerprint, self._pinned, algorithm=pinned_algorithm)
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._keepalive = (keepalive_interval_s, keepalive_count_max)
        self._kill_grace_s = kill_grace_s
        self._client_key: asyncssh.SSHKey | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _GuestClient | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"SshTarget({self._user}@{self._host}:{self._port}, key={self._key_path}, "
            f"passphrase={'set' if self._passphrase else 'none'}, "
            f"password={'set' if self._password else 'none'}, "
            f"host_key={self._pin.fingerprint or 'not pinned'})"
        )

    # -- public API -----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def host_key_fingerprint(self) -> str | None:
        """The pinned host key (``SHA256:...``), or None before the first login."""
        return self._pin.fingerprint

    @property
    def connected(self) -> bool:
        return self._usable()

    def _pinned(self, fingerprint: str, algorithm: str) -> None:
        self._unreported = {HOST_KEY_FACT: fingerprint, HOST_KEY_ALGORITHM_FACT: algorithm}
        if self._on_new_host_key is not None:
            self._on_new_host_key(fingerprint, algorithm)

    def take_facts(self) -> dict[str, str]:
        """Facts learnt since the last call (a host key pinned on first use)."""
        facts, self._unreported = self._unreported, {}
        return facts

    def stop_command(self, command_id: str, *, sudo: bool) -> Command:
        """Stops every guest process still tagged with ``command_id`` (an attempt that
        never finished: the guest outlived the run that started it)."""
        return stop_tagged_command(command_id, sudo=sudo)

    def forget_host_key(self) -> None:
        """Clear the pin after the guest's host keys were legitimately regenerated
        (re-sealed and rebooted): the next login pins and reports the new key."""
        self._pin.forget()

    async def wait_until_reachable(self, deadline_s: float) -> None:
        """Log in, retrying with exponential backoff for up to ``deadline_s`` seconds
        (a booting guest refuses or ignores connections for a while).

        Refused credentials and a changed host key fail at once: waiting cannot fix them.
        """
        async with self._lock:
            if not self._usable():
                await self._connect_until(deadline_s)

    async def run(self, command: Command, *, timeout_s: float | None, sink: OutputSink) -> CommandResult:
        """Run a ``shell`` command in the guest (see ``Target.run``).

        A connection lost while the command runs gives ``CommandResult(None, error=...)``
        (never a silent re-run), except for ``ends_connection`` commands, whose success
        it is (exit 0). Either way the next call reconnects, waiting for the guest.
        """
        attempt = current_attempt()
        command_id = attempt.command_id if attempt is not None else secrets.token_hex(8)
        line = remote_command_line(command, command_id=command_id)
        session = _CommandSession(sink, keep_stderr_head=command.sudo)
        chan = await self._open_session(line, session)
        if chan is None:
            return self._with_facts(self._result(command, session))
        try:
            finished = await _finished_within(session.done, timeout_s)
        except asyncio.CancelledError:
            await self._stop(chan, session, command_id, sudo=command.sudo)
            raise  # after stopping: a cancelled build leaves nothing running unseen
        if session.sink_error is not None:
            # Its output has nowhere to go: no grace period.
            await self._stop(chan, session, command_id, sudo=command.sudo, signals=("KILL",))
        elif not finished:
            await self._stop(chan, session, command_id, sudo=command.sudo)
        if not finished:
            return self._with_facts(CommandResult(None, timed_out=True))
        return self._with_facts(self._result(command, session))

    def _with_facts(self, result: CommandResult) -> CommandResult:
        facts = self.take_facts()
        if not facts:
            return result
        return CommandResult(
            result.exit_code,
            timed_out=result.timed_out,
            error=result.error,
            facts={**result.facts, **facts},
            artifacts=result.artifacts,
        )

    async def upload(self, local_path: str | Path, remote_path: str, mode: int = 0o644) -> str:
        """Copy a local file to the guest over SFTP; return the sha256 of the bytes sent.

        Written to ``<remote_path>.gmi-partial`` then renamed, so a dropped connection
        never leaves a truncated file under the real name.
        """
        conn = await self._connection()
        partial = f"{remote_path}.gmi-partial"
        try:
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(partial, "wb") as remote:
                    digest = await _stream_to(Path(local_path), remote)
                await sftp.chmod(partial, mode)
                await sftp.posix_rename(partial, remote_path)
        except (asyncssh.Error, OSError) as exc:
            raise TargetError(
                f"upload of {local_path} to {self.address}:{remote_path} failed: {self._redact(exc)}",
                hint="check the remote directory exists and is writable by "
                f"{self._user!r} (uploads do not use sudo)",
                retryable=isinstance(exc, asyncssh.ConnectionLost) or not self._usable(),
            ) from exc
        return digest

    async def is_powered_off(self, probe_timeout_s: float = 3.0) -> bool:
        """True when nothing answers at the guest's SSH address.

        Only meaningful right after the caller asked the guest to power off: a guest
        that is still booting (or whose sshd stopped first) looks the same.
        """
        if self._usable():
            return False
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), probe_timeout_s
            )
        except (OSError, TimeoutError):
            return True
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return False

    async def close(self) -> None:
        conn = self._drop_connection()
        if conn is not None:
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(conn.wait_closed(), 5.0)

    # -- running a command ----------------------------------------------------------

    async def _open_session(
        self, line: str, session: _CommandSession
    ) -> asyncssh.SSHClientChannel[bytes] | None:
        """Start the command; reconnect once if the connection turned out dead.

        Retrying is safe only while the channel never opened: after that, the exec
        request may have reached the guest. Then None: the caller reports the command
        as cut off (``session.lost``), never runs it twice.
        """
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                chan, _ = await asyncio.wait_for(
                    conn.create_session(lambda: session, line, encoding=None, request_pty=False),
                    self._connect_timeout_s,
                )
            except (asyncssh.ChannelOpenError, *_TRANSIENT) as exc:
                if self._usable() and not isinstance(exc, TimeoutError):
                    raise TargetError(
                        f"{self.address} refused to start a command: {self._redact(exc)}",
                        retryable=True,
                    ) from exc
                self._drop_connection()
                if session.opened:
                    session.lost = session.lost or exc
                    return None
                if attempt == 2:
                    raise TargetError(
                        f"lost the SSH connection to {self.address} twice while starting "
                        f"a command: {self._redact(exc)}",
                        retryable=True,
                    ) from exc
            else:
                return chan
        raise AssertionError("unreachable")

    async def _stop(
        self,
        chan: asyncssh.SSHClientChannel[bytes],
        session: _CommandSession,
        command_id: str,
        *,
        sudo: bool,
        signals: tuple[str, ...] = ("TERM", "KILL"),
    ) -> None:
        """Stop a running command: TERM, then KILL, then hang up.

        Each round sends a channel signal (OpenSSH delivers it to the command's process
        group, but only for non-root logins) and signals every process tagged with the
        command's id (any login, children included).
        """
        for signal in signals:
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.send_signal(signal)
            await self._signal_tagged(command_id, signal, sudo=sudo)
            if await _finished_within(session.done, self._kill_grace_s):
                return
        chan.close()

    async def _signal_tagged(self, command_id: str, signal: str, *, sudo: bool) -> None:
        """Best effort: send ``signal`` to every guest process of one command."""
        line = remote_command_line(Command(KILL_TAGGED, args=(signal, command_id), sudo=sudo))
        conn = self._conn
        if conn is None or not self._usable():
            return
        with contextlib.suppress(OSError, TimeoutError, asyncssh.Error):
            await asyncio.wait_for(conn.run(line, check=False), self._kill_grace_s)

    def _result(self, command: Command, session: _CommandSession) -> CommandResult:
        if session.sink_error is not None:
            raise session.sink_error
        if session.exit_status is not None:
            if command.ends_connection and session.exit_status == 0:
                self._drop_connection()  # the guest is going away: reconnect next time
            return CommandResult(session.exit_status, error=self._sudo_hint(session))
        if command.ends_connection:
            # Power-off and reboot take sshd down with them: that is their success.
            self._drop_connection()
            return CommandResult(0)
        if session.lost is not None:
            self._drop_connection()
            return CommandResult(
                None,
                error=f"connection lost to {self.address} while the command was running "
                f"({self._redact(session.lost)}); it may or may not have completed",
            )
        if session.exit_signal is not None:
            return CommandResult(None, error=f"the command was killed by SIG{session.exit_signal}")
        return CommandResult(None, error="the command ended without reporting an exit status")

    def _sudo_hint(self, session: _CommandSession) -> str:
        if session.exit_status == 0 or not any(refusal in session.stderr_head for refusal in _SUDO_REFUSALS):
            return ""
        return (
            f"sudo refused to run without a password for {self._user!r} on the guest: "
            "give this user passwordless sudo (a NOPASSWD rule in /etc/sudoers.d) "
            "or log in as root"
        )

    # -- connecting -----------------------------------------------------------------

    def _usable(self) -> bool:
        return (
            self._conn is not None
            and self._client is not None
            and not self._client.lost
            and not self._conn.is_closed()
        )

    def _drop_connection(self) -> asyncssh.SSHClientConnection | None:
        conn, self._conn, self._client = self._conn, None, None
        if conn is not None:
            conn.close()
        return conn

    async def _connection(self) -> asyncssh.SSHClientConnection:
        """The live connection; (re)connected here, waiting for a rebooting guest."""
        async with self._lock:
            if not self._usable():
                self._drop_connection()
                await self._connect_until(self._reconnect_timeout_s)
            assert self._conn is not None
            return self._conn

    async def _connect_until(self, deadline_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        delay, attempts = _BACKOFF_FIRST_S, 0
        while True:
            attempts += 1
            remaining = end - loop.time()
            try:
                await self._connect_once(max(min(self._connect_timeout_s, remaining), 0.5))
            except TargetError as err:
                if not err.retryable:
                    raise
                last = str(err)
            else:
                return
            remaining = end - loop.time()
            if remaining <= 0:
                raise self._unreachable(deadline_s, attempts, last)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _connect_once(self, timeout_s: float) -> None:
        client_keys = [self._load_client_key()] if self._key_path is not None else None
        client = _GuestClient(self._pin)
        self._pin.begin_attempt()
        try:
            conn = await asyncssh.connect(
                self._host,
                self._port,
                username=self._user,
                client_factory=lambda: client,
                known_hosts=trust_no_stored_keys,
                server_host_key_algs=self._pin.preferred_algorithms() or (),
                client_keys=client_keys,
                password=self._password.value if self._password else None,
                password_auth=self._password is not None,
                kbdint_auth=self._password is not None,
                # Hermetic: no ~/.ssh/config, agent, default keys, GSS or X.509 roots.
                config=None,
                agent_path=None,
                gss_auth=False,
                gss_kex=False,
                x509_trusted_certs=None,
                keepalive_interval=self._keepalive[0],
                keepalive_count_max=self._keepalive[1],
                connect_timeout=timeout_s,
            )
        except (asyncssh.Error, *_TRANSIENT) as exc:
            raise self._connect_error(exc) from exc
        self._conn, self._client = conn, client
        self._pin.confirm()

    def _load_client_key(self) -> asyncssh.SSHKey:
        if self._client_key is None:
            assert self._key_path is not None
            passphrase = self._passphrase.value if self._passphrase else None
            try:
                self._client_key = asyncssh.read_private_key(self._key_path, passphrase)
            except (ValueError, OSError) as exc:  # KeyImportError is a ValueError
                raise TargetError(
                    f"cannot load the SSH private key {self._key_path}: {self._redact(exc)}",
                    hint="check the key file and its passphrase (never shown here)",
                ) from exc
        return self._client_key

    def _connect_error(self, exc: BaseException) -> TargetError:
        """Sort a failed login into "wait and retry" and "stop: a person must act"."""
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return self._pin.mismatch(self.address) or TargetError(
                f"{self.address} presented a host key that could not be verified: {self._redact(exc)}"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return TargetError(
                f"the guest at {self.address} refused the login as {self._user!r} "
                f"(tried: {self._credentials()})",
                hint=f"check that {self._user!r} exists on the guest and accepts this "
                "key (authorized_keys) or password; retrying will not help",
            )
        if isinstance(exc, _TRANSIENT):
            return TargetError(f"{type(exc).__name__}: {self._redact(exc) or 'no answer'}", retryable=True)
        return TargetError(f"SSH to {self.address} failed: {self._redact(exc)}")

    def _unreachable(self, deadline_s: float, attempts: int, last: str) -> TargetError:
        return TargetError(
            f"the guest at {self.address} did not accept an SSH login within "
            f"{deadline_s:g} s ({attempts} attempts as {self._user!r} with "
            f"{self._credentials()}; last error: {last})",
            hint="check the VM is running, has network, and runs sshd on this port "
            "(a first boot can take minutes)",
            retryable=True,
        )

    def _credentials(self) -> str:
        tried = []
        if self._key_path is not None:
            tried.append(f"key {self._key_path}")
        if self._password is not None:
            tried.append("a password")
        return " and ".join(tried)

    def _redact(self, value: object) -> str:
        """``str(value)`` with any secret replaced (defence in depth: asyncssh's own
        messages do not echo credentials, but a message is never trusted to)."""
        text = str(value)
        for secret in (self._password, self._passphrase):
            if secret is not None:
                text = text.replace(secret.value, "***")
        return text


async def _finished_within(done: Awaitable[None], seconds: float | None) -> bool:
    """Whether ``done`` completes within ``seconds`` (None: wait as long as it takes);
    shielded, so a timeout does not cancel it."""
    try:
        await asyncio.wait_for(asyncio.shield(done), seconds)
    except TimeoutError:
        return False
    return True


async def _stream_to(local: Path, remote: asyncssh.SFTPClientFile) -> str:
    """Send ``local`` with a few writes in flight; hash the bytes as they go."""
    digest = hashlib.sha256()
    pending: set[asyncio.Task[int]] = set()
    offset = 0
    try:
        with local.open("rb") as source:
            while chunk := source.read(_UPLOAD_CHUNK):
                digest.update(chunk)
                pending.add(asyncio.ensure_future(remote.write(chunk, offset)))
                offset += len(chunk)
                if len(pending) >= _UPLOAD_IN_FLIGHT:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # surface a failed write now
        await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
    return digest.hexdigest()
