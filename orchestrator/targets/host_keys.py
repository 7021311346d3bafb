"""Trust-on-first-use pinning of a guest's SSH host key.

The first successful login records the key's fingerprint (the engine stores it as an
event through ``on_new_host_key``); every later connection must present the same key.
Host-key checking is never switched off: a key that does not match the pin is refused
during the handshake, before any credential is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from orchestrator.targets.base import TargetError

NewHostKeyCallback = Callable[[str, str], None]
"""Called with (fingerprint ``SHA256:...``, key algorithm) when a key is first pinned."""

# asyncssh signs with any of these for an RSA host key; the key itself is "ssh-rsa".
_SIG_ALGS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}

# The build's facts that pin the guest's host key (every host uses these names).
HOST_KEY_FACT = "guest.ssh_host_key_fingerprint"
HOST_KEY_ALGORITHM_FACT = "guest.ssh_host_key_fingerprint.algorithm"


@dataclass(frozen=True, slots=True)
class SeenKey:
    fingerprint: str
    algorithm: str


class HostKeyPin:
    """The pinned fingerprint of one guest, and the key seen on the latest attempt."""

    def __init__(
        self,
        fingerprint: str | None,
        on_new_host_key: NewHostKeyCallback,
        *,
        algorithm: str | None = None,
    ) -> None:
        self._fingerprint = fingerprint
        self._algorithm = algorithm
        self._on_new = on_new_host_key
        self._seen: SeenKey | None = None

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    def begin_attempt(self) -> None:
        self._seen = None

    def accepts(self, key: asyncssh.SSHKey) -> bool:
        """asyncssh's question during the handshake: is this the guest's key?

        Unpinned: yes (trust on first use; asyncssh still checks the server holds the
        private key). Pinned: only the same fingerprint.
        """
        self._seen = SeenKey(key.get_fingerprint("sha256"), key.get_algorithm())
        return self._fingerprint is None or self._seen.fingerprint == self._fingerprint

    def confirm(self) -> None:
        """After a successful login: pin a first-seen key and report it once."""
        seen = self._seen
        if self._fingerprint is not None or seen is None:
            return
        self._fingerprint, self._algorithm = seen.fingerprint, seen.algorithm
        self._on_new(seen.fingerprint, seen.algorithm)

    def forget(self) -> None:
        """Drop the pin: the next login trusts (and reports) whatever key it sees.

        For a guest whose host keys were legitimately regenerated (re-sealed and
        rebooted), on the engine's decision.
        """
        self._fingerprint = None
        self._algorithm = None

    def preferred_algorithms(self) -> list[str] | None:
        """Ask the server for the pinned key's type first, so a guest that holds
        several host keys presents the pinned one (the default order could change
        with an asyncssh upgrade and look like a changed key)."""
        if self._algorithm is None:
            return None
        first = list(_SIG_ALGS.get(self._algorithm, (self._algorithm,)))
        defaults = [alg.decode() for alg in get_default_public_key_algs()]
        return first + [alg for alg in defaults if alg not in first]

    def mismatch(self, where: str) -> TargetError | None:
        """The error for the latest attempt if the guest presented another key."""
        seen = self._seen
        if self._fingerprint is None or seen is None or seen.fingerprint == self._fingerprint:
            return None
        return TargetError(
            f"the SSH host key of {where} changed: expected {self._fingerprint}, "
            f"the guest presented {seen.fingerprint} ({seen.algorithm}); "
            "refusing to connect",
            hint=(
                "If the VM was rebuilt or re-sealed, its host key legitimately changed: "
                "start a new build, or clear the pin with `gmi-fsm resume ID --trust-new-host-key`. "
                "Otherwise something else answers at this address: do not trust it."
            ),
            retryable=False,
        )


def trust_no_stored_keys(host: str, addr: str, port: int | None) -> tuple[list[str], list[str], list[str]]:
    """asyncssh ``known_hosts`` callable: no stored key is trusted.

    Every key then goes through ``SSHClient.validate_host_public_key`` (the pin). It
    must be a real value: an empty one makes asyncssh read ``~/.ssh/known_hosts``, and
    ``None`` switches host-key checking off.
    """
    return [], [], []
