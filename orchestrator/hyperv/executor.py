"""The one seam between gmi-fsm's Hyper-V code and Windows: run a fixed script.

Everything that talks to a Hyper-V host goes through :class:`PowerShellExecutor`.
The real one (:class:`orchestrator.hyperv.psrp.PsrpExecutor`) speaks PowerShell
Remoting; the :class:`orchestrator.hyperv.simulator.HyperVSimulator` interprets the
same scripts in memory for tests and demos. Both take the script as fixed text and
the user's values as bound parameters only: a value never becomes script text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.targets.base import TargetError


class PsResult(BaseModel):
    """What one script run returned.

    ``output`` holds the pipeline's output objects, each parsed from the JSON the
    script emitted (``ConvertTo-Json -Compress``); ``errors`` the error records as
    text. ``had_errors`` is PowerShell's own flag; a run also failed when any error
    record arrived, because ``Write-Error`` does not set it (see :attr:`failed`).
    """

    model_config = ConfigDict(frozen=True)

    output: list[Any] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    had_errors: bool = False

    @property
    def failed(self) -> bool:
        return self.had_errors or bool(self.errors)


class PowerShellExecutor(Protocol):
    """Runs a fixed PowerShell script with bound parameters on one Hyper-V host."""

    label: str
    """Shown to the user: the endpoint (``https://hv01:5986``) or ``SIMULATOR ...``."""

    async def run(
        self,
        script: str,
        params: Mapping[str, object],
        *,
        timeout_s: float,
        input: Sequence[str] | None = None,  # PowerShell's own name: the pipeline's input
    ) -> PsResult:
        """Run ``script`` with ``params`` bound by name; give up after ``timeout_s``.
        ``input``: the pipeline's input objects, in order (text; a script that reads
        them says ``$input``), each sent as a PSRP message of its own.

        Raises :class:`TargetError` when the script could not be run or its end not
        observed (login refused, host unreachable, TLS failure, connection lost,
        timeout); a script that ran and failed is a :class:`PsResult` with errors.
        """
        ...

    async def close(self) -> None: ...


def parse_output(raw: list[object]) -> list[Any]:
    """Output objects from the wire: our scripts emit JSON strings; anything else
    (a stray object some cmdlet wrote to the pipeline) is kept as its text."""
    parsed: list[Any] = []
    for item in raw:
        if isinstance(item, str):
            try:
                parsed.append(json.loads(item))
            except ValueError:
                parsed.append(item)
        else:
            parsed.append(str(item))
    return parsed


# -- the transport failures, worded once for the real executor and the simulator --


class LoginRefusedError(TargetError):
    """The host refused the login (wrong account or password, no WinRM access)."""


class UnreachableError(TargetError):
    """Nothing answered at the WinRM endpoint (name, port, firewall, listener)."""


class TlsFailureError(TargetError):
    """The TLS handshake failed: the host's certificate is not trusted or not its name's."""


def login_refused(where: str, auth: str, detail: str = "") -> TargetError:
    return LoginRefusedError(
        f"{where}: the Hyper-V host refused the login ({auth}){': ' + detail if detail else ''}",
        hint="check host.username and the password reference; the account needs WinRM access "
        "(Remote Management Users or Administrators) and Hyper-V Administrators; see docs/hyperv.md",
        retryable=False,
    )


def unreachable(where: str, detail: str = "") -> TargetError:
    return UnreachableError(
        f"{where}: cannot reach the Hyper-V host's WinRM listener{': ' + detail if detail else ''}",
        hint="check host.host and host.port, that WinRM listens (winrm enumerate winrm/config/listener) "
        "and that the firewall allows TCP 5986; see docs/hyperv.md",
        retryable=True,
    )


def tls_failure(where: str, detail: str = "") -> TargetError:
    return TlsFailureError(
        f"{where}: the TLS handshake with the Hyper-V host failed "
        f"(its certificate is not trusted or does not match the name){': ' + detail if detail else ''}",
        hint="give host.ca_bundle (the CA or the host's own certificate in PEM) and connect by the "
        "name in the certificate; see docs/hyperv.md",
        retryable=False,
    )


class CallTimeoutError(TargetError):
    """A script did not finish by its deadline and was stopped."""


def call_timeout(where: str, script: str, timeout_s: float) -> TargetError:
    return CallTimeoutError(
        f"{where}: script {script} did not finish within {timeout_s:g} s; it was stopped",
        hint="the host may be overloaded or the operation slow; resume with `gmi-fsm run --resume ID` "
        "(host steps are safe to run again) or raise host.call_timeout_s",
        retryable=True,
    )


def connection_lost(where: str, script: str, detail: str = "") -> TargetError:
    return TargetError(
        f"{where}: the connection to the Hyper-V host was lost during {script}"
        f"{': ' + detail if detail else ''}; whether it took effect is unknown",
        hint="when the host is back, resume with `gmi-fsm run --resume ID`: host steps check "
        "what is already done before acting",
        retryable=True,
    )
