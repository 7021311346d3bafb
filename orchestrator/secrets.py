"""Secret references (``env:NAME``, ``file:PATH``) and their run-time values.

A spec holds references only. Values are resolved when a run needs them, wrapped
in :class:`Secret` (whose ``repr``/``str`` never show the value), and registered with
the :data:`REDACTOR` so logs and recorded output mask them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REF_PATTERN = re.compile(r"^(env|file):(.+)$")
MASK = "***"


class SecretError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class Secret:
    """A resolved secret. Use :meth:`reveal` at the one place the value is sent."""

    __slots__ = ("_value", "ref")

    def __init__(self, ref: str, value: str) -> None:
        self.ref = ref
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__


SECRET_MAX_BYTES = 1 << 20  # a key or a password: a few KiB at most


def is_reference(text: str) -> bool:
    return bool(REF_PATTERN.match(text))


def resolve(ref: str, *, where: str, base_dir: Path | None = None) -> Secret:
    """Resolve a reference; ``where`` names the spec field for error messages."""
    m = REF_PATTERN.match(ref)
    if not m:
        raise SecretError(
            f"{where}: not a secret reference",
            hint="write env:NAME (an environment variable) or file:PATH (a file holding it)",
        )
    kind, name = m.groups()
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(
                f"{where}: environment variable {name} is not set",
                hint=f"export {name}=... before running gmi-fsm",
            )
    else:
        path = Path(name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        from orchestrator.small_file import UnreadableFile, read_small_file  # noqa: PLC0415

        try:
            # A cap and no blocking open: the path may name a FIFO or /dev/zero.
            value = read_small_file(path, SECRET_MAX_BYTES).decode("utf-8").rstrip("\r\n")
        except UnreadableFile as exc:
            raise SecretError(
                f"{where}: secret file {path} {exc}", hint="point file: at the file that holds the secret"
            ) from None
        except UnicodeDecodeError:
            raise SecretError(
                f"{where}: secret file {path} is not UTF-8 text", hint="a key or password file is text"
            ) from None
        except OSError as exc:
            raise SecretError(
                f"{where}: cannot read secret file {path}: {exc.strerror}",
                hint="check the path in the spec and the file's permissions",
            ) from None
    REDACTOR.add(value)
    return Secret(ref, value)


class Redactor:
    """Masks every registered secret value in text and byte streams."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        # Very short values would mask ordinary text everywhere; a 1-3 character
        # password is refused at resolve time by its own weakness, not hidden here.
        if len(value) >= 4:
            self._values.add(value)

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def text(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    def stream(self) -> StreamRedactor:
        return StreamRedactor({v.encode() for v in self._values})


class StreamRedactor:
    """Masks secrets in a byte stream fed in chunks, even when a secret spans two
    chunks: it holds back the last ``len(longest secret) - 1`` bytes until more come."""

    def __init__(self, secrets: set[bytes]) -> None:
        self._secrets = sorted(secrets, key=len, reverse=True)
        self._keep = max((len(s) for s in self._secrets), default=1) - 1
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if not self._secrets:
            return data
        buf = self._pending + data
        for s in self._secrets:
            buf = buf.replace(s, MASK.encode())
        if self._keep and len(buf) > self._keep:
            out, self._pending = buf[: -self._keep], buf[-self._keep :]
        elif self._keep:
            out, self._pending = b"", buf
        else:
            out, self._pending = buf, b""
        return out

    def flush(self) -> bytes:
        out, self._pending = self._pending, b""
        return out


REDACTOR = Redactor()
