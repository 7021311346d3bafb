"""The validate stage's attacker's check: does the build's own way in still open a VM
made from the GMI? It logs in to the fresh copy with the build's SSH key (and the
build's password, if the spec used one) as every user of the copy, plus root and
the build user: each attempt must be refused.

A refusal is what we want, so this treats a successful login as the failure, and any
other outcome (the copy unreachable, a timeout) as "could not check": never a pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from orchestrator.gmi.report import Check, check, failed

ATTEMPT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BuildCredentials:
    """The build's own credentials. Never logged: only whether they opened a door."""

    key_path: Path | None = None
    key_passphrase: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"BuildCredentials(key_path={self.key_path!r}, passphrase=<hidden>, password=<hidden>)"


def login_users(passwd: str, build_user: str) -> list[str]:
    """Every user in ``passwd`` text, plus root and the build user. Not only those with a
    login shell: sshd accepts a key for a nologin user too, and the session can still
    forward ports."""
    users = ["root"]
    if build_user:
        users.append(build_user)
    users += [line.split(":", 1)[0] for line in passwd.splitlines() if line.count(":") >= 6]
    return list(dict.fromkeys(users))


async def _attempt(host: str, port: int, user: str, **auth: object) -> str:
    """ "open", "refused" or "error: ..." for one login."""
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port=port,
                username=user,
                known_hosts=None,  # the copy's host key is new by design
                agent_path=None,
                config=[],
                **auth,
            ),
            ATTEMPT_TIMEOUT_S,
        )
    except asyncssh.PermissionDenied:
        return "refused"
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        return f"error: {type(exc).__name__}"
    conn.close()
    await conn.wait_closed()
    return "open"


async def build_access_check(host: str, port: int, users: Sequence[str], creds: BuildCredentials) -> Check:
    name = "boot.sealed.build-access"
    ways: list[tuple[str, dict[str, object]]] = []
    if creds.key_path is not None:
        key = asyncssh.read_private_key(creds.key_path, creds.key_passphrase)
        ways.append(
            ("the build's SSH key", {"client_keys": [key], "password": None, "preferred_auth": "publickey"})
        )
    if creds.password:
        ways.append(
            (
                "the build's password",
                {
                    "client_keys": None,
                    "password": creds.password,
                    "preferred_auth": "password,keyboard-interactive",
                },
            )
        )
    if not ways:
        return failed(name, "the spec gives no build credentials to try")
    opened, errors = [], []
    for label, auth in ways:
        for user in users:
            result = await _attempt(host, port, user, **auth)
            if result == "open":
                opened.append(f"{label} logs in as {user}")
            elif result != "refused":
                errors.append(f"{user}: {result}")
    if errors and not opened:
        return failed(name, "could not try every login (" + ", ".join(errors) + "): not proven refused")
    return check(
        name,
        not opened,
        f"refused for every user of the copy ({len(users)}: {', '.join(users)}) "
        f"with {' and '.join(w for w, _ in ways)}",
        "the build's access opens the GMI: " + "; ".join(opened),
    )
