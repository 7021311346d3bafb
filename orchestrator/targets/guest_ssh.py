"""The build guest's SSH target, made the same way by every host: secrets resolved
from the spec's references, the host key pinned from the build's facts, and a new
key reported as facts in the result of the command that first saw it (the engine
records them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.targets.host_keys import HOST_KEY_ALGORITHM_FACT, HOST_KEY_FACT

if TYPE_CHECKING:
    from orchestrator.spec import BuildSpec
    from orchestrator.targets.ssh import SshTarget


def key_file(ref: str | None, base_dir: Path) -> Path | None:
    """The path in a ``file:PATH`` key reference (relative to the spec's folder)."""
    if not ref:
        return None
    path = Path(ref.removeprefix("file:")).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def guest_ssh_target(
    spec: BuildSpec,
    base_dir: Path,
    facts: Mapping[str, str],
    address: str,
    *,
    port: int | None = None,
) -> SshTarget:
    """``facts``: the build's facts now (the pinned host key, if any)."""
    from orchestrator.secrets import resolve  # noqa: PLC0415
    from orchestrator.targets.ssh import SshTarget  # noqa: PLC0415

    guest = spec.guest
    if guest is None:
        raise ValueError("this host needs a guest section in the spec")

    def secret(ref: str | None, where: str) -> str | None:
        return resolve(ref, where=where, base_dir=base_dir).reveal() if ref else None

    return SshTarget(
        address,
        port=port if port is not None else guest.ssh_port,
        user=guest.user,
        key_path=key_file(guest.ssh_private_key, base_dir),
        key_passphrase=secret(guest.ssh_key_passphrase, "guest.ssh_key_passphrase"),
        password=secret(guest.password, "guest.password"),
        pinned_fingerprint=facts.get(HOST_KEY_FACT) or None,
        pinned_algorithm=facts.get(HOST_KEY_ALGORITHM_FACT) or None,
        reconnect_timeout_s=guest.connect_timeout_s,
    )


def build_user_public_key(spec: BuildSpec, base_dir: Path) -> str:
    """The OpenSSH public key line of the build user's private key (for seeds)."""
    import asyncssh  # noqa: PLC0415

    from orchestrator.secrets import resolve  # noqa: PLC0415
    from orchestrator.targets.base import TargetError  # noqa: PLC0415

    guest = spec.guest
    path = key_file(guest.ssh_private_key if guest else None, base_dir)
    if guest is None or path is None:
        raise TargetError(
            "seeding the build VM needs guest.ssh_private_key",
            hint="set guest.ssh_private_key: file:PATH (an OpenSSH private key)",
        )
    passphrase = (
        resolve(guest.ssh_key_passphrase, where="guest.ssh_key_passphrase", base_dir=base_dir).reveal()
        if guest.ssh_key_passphrase
        else None
    )
    try:
        key = asyncssh.read_private_key(str(path), passphrase)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise TargetError(
            f"cannot read the build user's private key {path}: {exc}",
            hint="guest.ssh_private_key must be file:PATH of an OpenSSH private key",
        ) from None
    return str(key.export_public_key("openssh").decode().strip())
