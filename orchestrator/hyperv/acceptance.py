"""``gmi-fsm hyperv check``: the acceptance check an operator runs against a real host
before a first build.

One call of the read-only ``host-check`` script (nothing is created on the host, nothing
is written to the event log) tells whether WinRM answers, TLS and the login hold, and
what the host offers: rights by well-known SID, the Hyper-V module, the switch, free
space where the VM and the export go, the SMB share, the Secure Boot templates. Each
failed item names its fix.
"""

from __future__ import annotations

import asyncio
import ntpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.hyperv.executor import (
    LoginRefusedError,
    PowerShellExecutor,
    TlsFailureError,
    UnreachableError,
)
from orchestrator.hyperv.invoke import ScriptError, outcome_of
from orchestrator.hyperv.scripts import script_text
from orchestrator.hyperv.smb import SmbLogin, SmbSession, share_relative
from orchestrator.spec import BuildSpec, HyperVHostSpec
from orchestrator.targets.base import TargetError

Status = Literal["ok", "warn", "fail", "skipped"]

ADMINISTRATORS = "S-1-5-32-544"
HYPERV_ADMINISTRATORS = "S-1-5-32-578"
REMOTE_MANAGEMENT_USERS = "S-1-5-32-580"

# The templates Hyper-V ships for Generation 2 VMs since Windows Server 2016 (what
# Set-VMFirmware -SecureBootTemplate takes): asked for when the host cannot list its own.
KNOWN_TEMPLATES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority", "OpenSourceShieldedVM")
CHECK_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class CheckItem:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class HostCheckReport:
    spec: str
    endpoint: str
    items: tuple[CheckItem, ...]
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(i.status == "fail" for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "endpoint": self.endpoint,
            "ok": self.ok,
            "checks": [asdict(i) for i in self.items],
            "facts": dict(sorted(self.facts.items())),
        }

    def to_text(self) -> str:
        width = max(len(i.name) for i in self.items)
        lines = [f"Hyper-V host check of {self.spec} against {self.endpoint}"]
        for i in self.items:
            lines.append(f"  {i.status.upper():7} {i.name:{width}}  {i.detail}")
            if i.fix and i.status in ("fail", "warn"):
                lines.append(f"  {'':7} {'':{width}}  fix: {i.fix}")
        verdict = "ready for a first build" if self.ok else "NOT ready: fix the items marked FAIL"
        lines.append(f"result: {verdict}")
        return "\n".join(lines) + "\n"


def script_params(h: HyperVHostSpec) -> dict[str, object]:
    return {
        "VmPath": h.vm_path,
        "ExportPath": h.export_path,
        "SwitchName": h.switch,
        "SmbShare": h.smb_share or "",
    }


async def check_host(
    spec: BuildSpec,
    executor: PowerShellExecutor,
    *,
    spec_name: str = "",
    timeout_s: float = CHECK_TIMEOUT_S,
    smb: SmbLogin | None = None,
) -> HostCheckReport:
    """Run the check against ``executor``'s host (the caller closes the executor);
    ``smb``: the login to try the spec's share with from this machine."""
    h = spec.host
    assert isinstance(h, HyperVHostSpec)
    shown = spec_name or spec.name
    try:
        result = await executor.run(script_text("host-check"), script_params(h), timeout_s=timeout_s)
        outcome = outcome_of("host-check", result)
    except TargetError as exc:
        return HostCheckReport(shown, executor.label, _transport_items(h, exc))
    except ScriptError as exc:
        items = [*_connected_items(h, ""), _item_script_failed(exc)]
        return HostCheckReport(shown, executor.label, tuple(items))
    facts = outcome.facts
    items = [
        *_connected_items(h, facts.get("host.user", "")),
        *_rights(facts),
        *_hyperv(h, facts),
        *_space(h, facts),
        *await asyncio.to_thread(_smb, spec, facts, smb),
    ]
    return HostCheckReport(shown, executor.label, tuple(items), facts)


# -- connection ---------------------------------------------------------------------------


def _winrm_ok(h: HyperVHostSpec) -> CheckItem:
    return CheckItem("winrm", "ok", f"the WinRM listener answers on {h.transport.upper()}")


def _tls_ok(h: HyperVHostSpec) -> CheckItem:
    if h.transport == "http":
        return CheckItem(
            "tls",
            "warn",
            "plain HTTP: only the auth protocol encrypts the messages, and the host is not authenticated",
            fix="use transport: https (docs/hyperv.md section 2)",
        )
    source = f"host.ca_bundle {h.ca_bundle}" if h.ca_bundle else "the system's CA store"
    return CheckItem("tls", "ok", f"the host's certificate is trusted ({source}) and matches {h.host}")


def _connected_items(h: HyperVHostSpec, user: str) -> list[CheckItem]:
    who = f" as {user}" if user else ""
    return [
        _winrm_ok(h),
        _tls_ok(h),
        CheckItem("auth", "ok", f"logged in{who} ({h.auth})"),
        CheckItem("session", "ok", "a PowerShell session opened and ran the check script"),
    ]


def _transport_items(h: HyperVHostSpec, exc: TargetError) -> tuple[CheckItem, ...]:
    not_checked = "not checked: no session with the host"
    if isinstance(exc, UnreachableError):
        head = [CheckItem("winrm", "fail", str(exc), fix=exc.hint)]
    elif isinstance(exc, TlsFailureError):
        head = [_winrm_ok(h), CheckItem("tls", "fail", str(exc), fix=exc.hint)]
    elif isinstance(exc, LoginRefusedError):
        head = [_winrm_ok(h), _tls_ok(h), CheckItem("auth", "fail", str(exc), fix=exc.hint)]
    else:
        head = [
            _winrm_ok(h),
            _tls_ok(h),
            CheckItem("auth", "ok", f"logged in ({h.auth})"),
            CheckItem("session", "fail", str(exc), fix=exc.hint or "see docs/hyperv.md section 7"),
        ]
    names = ("winrm", "tls", "auth", "session", "rights.winrm", "rights.hyperv", "rights.mount-vhd")
    rest = ("hyperv.module", "switch", "secure-boot", "space.vm_path", "space.export_path", "smb-share")
    done = {i.name for i in head}
    return (*head, *(CheckItem(n, "skipped", not_checked) for n in (*names, *rest) if n not in done))


def _item_script_failed(exc: ScriptError) -> CheckItem:
    return CheckItem(
        "host-check",
        "fail",
        str(exc),
        fix="the check script failed on the host: run it again with -v; see docs/hyperv.md section 7",
    )


# -- what the host offers -------------------------------------------------------------------


def _member(facts: dict[str, str], sid: str) -> bool:
    return facts.get(f"member.{sid}") == "True"


def _rights(facts: dict[str, str]) -> list[CheckItem]:
    user = facts.get("host.user", "the account")
    admin = _member(facts, ADMINISTRATORS)
    items = []
    if admin or _member(facts, REMOTE_MANAGEMENT_USERS):
        how = "Administrators" if admin else f"Remote Management Users ({REMOTE_MANAGEMENT_USERS})"
        items.append(CheckItem("rights.winrm", "ok", f"{user} may use WinRM: member of {how}"))
    else:
        items.append(
            CheckItem(
                "rights.winrm",
                "warn",
                f"{user} is in neither Remote Management Users ({REMOTE_MANAGEMENT_USERS}) nor "
                "Administrators; this session works, perhaps through a custom WinRM permission",
                fix=f"Add-LocalGroupMember -SID {REMOTE_MANAGEMENT_USERS} -Member '{user}'",
            )
        )
    if admin or _member(facts, HYPERV_ADMINISTRATORS):
        how = "Administrators" if admin else f"Hyper-V Administrators ({HYPERV_ADMINISTRATORS})"
        items.append(CheckItem("rights.hyperv", "ok", f"{user} may manage Hyper-V: member of {how}"))
    else:
        items.append(
            CheckItem(
                "rights.hyperv",
                "fail",
                f"{user} is in neither Hyper-V Administrators ({HYPERV_ADMINISTRATORS}) nor Administrators "
                f"({ADMINISTRATORS})",
                fix=f"Add-LocalGroupMember -SID {HYPERV_ADMINISTRATORS} -Member '{user}' (then log in again)",
            )
        )
    if admin:
        items.append(CheckItem("rights.mount-vhd", "ok", f"{user} is in Administrators: Mount-VHD works"))
    else:
        items.append(
            CheckItem(
                "rights.mount-vhd",
                "warn",
                f"{user} is not in Administrators ({ADMINISTRATORS}): Mount-VHD, used by the compaction step "
                "(compact/vhd.optimize), is refused on most Windows versions",
                fix=f"Add-LocalGroupMember -SID {ADMINISTRATORS} -Member '{user}', "
                "or resolve that step by hand",
            )
        )
    return items


def _hyperv(h: HyperVHostSpec, facts: dict[str, str]) -> list[CheckItem]:
    if facts.get("hyperv.module") != "True":
        skipped = "not checked: no Hyper-V module"
        return [
            CheckItem(
                "hyperv.module",
                "fail",
                "the Hyper-V PowerShell module is not installed",
                fix="Install-WindowsFeature -Name Hyper-V -IncludeManagementTools -Restart (Server), or "
                "Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V-All (client)",
            ),
            CheckItem("switch", "skipped", skipped),
            CheckItem("secure-boot", "skipped", skipped),
        ]
    items = [CheckItem("hyperv.module", "ok", "the Hyper-V PowerShell module is installed")]
    names = [n for n in facts.get("switch.names", "").split("|") if n]
    if facts.get("switch.found") == "True":
        items.append(CheckItem("switch", "ok", f"virtual switch '{h.switch}' exists"))
    else:
        there = ", ".join(f"'{n}'" for n in names) or "none"
        items.append(
            CheckItem(
                "switch",
                "fail",
                f"no virtual switch named '{h.switch}' (names match case-sensitively; the host has: {there})",
                fix="set host.switch to one of them, or make one: New-VMSwitch -Name 'GMI' "
                "-SwitchType Internal (it must give DHCP leases and reach this machine over SSH)",
            )
        )
    items.append(_secure_boot(h, facts))
    return items


def _secure_boot(h: HyperVHostSpec, facts: dict[str, str]) -> CheckItem:
    if not h.secure_boot:
        return CheckItem("secure-boot", "ok", "Secure Boot off (host.secure_boot: false): no template needed")
    listed = [t for t in facts.get("secureboot.templates", "").split("|") if t]
    wanted = h.secure_boot_template
    if listed:
        if wanted in listed:
            return CheckItem("secure-boot", "ok", f"the host has the Secure Boot template {wanted}")
        return CheckItem(
            "secure-boot",
            "fail",
            f"the host has no Secure Boot template named {wanted} (it has: {', '.join(listed)})",
            fix="set host.secure_boot_template to one of them (Linux: MicrosoftUEFICertificateAuthority), or "
            "host.secure_boot: false",
        )
    if wanted in KNOWN_TEMPLATES:
        why = f" ({facts['secureboot.error']})" if facts.get("secureboot.error") else ""
        return CheckItem(
            "secure-boot",
            "warn",
            f"the host did not list its Secure Boot templates{why}; {wanted} is one Hyper-V ships "
            "since Windows Server 2016",
            fix="see it in Hyper-V Manager > VM Settings > Security > Template",
        )
    return CheckItem(
        "secure-boot",
        "fail",
        f"{wanted} is not a Secure Boot template Hyper-V ships ({', '.join(KNOWN_TEMPLATES)})",
        fix="set host.secure_boot_template to one of them (Linux: MicrosoftUEFICertificateAuthority)",
    )


def _space(h: HyperVHostSpec, facts: dict[str, str]) -> list[CheckItem]:
    items = []
    need = {"vm_path": h.disk_gib, "export_path": h.disk_gib}
    roots = {k: facts.get(f"{k}.root", "").upper() for k in need}
    if roots["vm_path"] and roots["vm_path"] == roots["export_path"]:
        # One drive holds the build's disk and its export: both at full size at worst.
        need = dict.fromkeys(need, 2 * h.disk_gib)
    for key, path in (("vm_path", h.vm_path), ("export_path", h.export_path)):
        name = f"space.{key}"
        nearest = facts.get(f"{key}.nearest", "")
        if not nearest:
            drive = ntpath.splitdrive(path)[0] or path
            items.append(
                CheckItem(
                    name,
                    "fail",
                    f"host.{key} {path}: no part of it exists on the host (is {drive} a drive there?)",
                    fix=f"set host.{key} to a folder on a local drive of the host",
                )
            )
            continue
        free = int(facts.get(f"{key}.free_gib", "-1"))
        twice = ", twice: the export is on the same drive" if need[key] > h.disk_gib else ""
        where = (
            path if facts.get(f"{key}.exists") == "True" else f"{path} (made by the build under {nearest})"
        )
        if free < need[key]:
            items.append(
                CheckItem(
                    name,
                    "fail",
                    f"{free} GiB free on {roots[key] or nearest} for {where}; a build needs "
                    f"{need[key]} GiB there (host.disk_gib {h.disk_gib}{twice})",
                    fix=f"free space on that drive, or set host.{key} to a folder on another drive",
                )
            )
        else:
            items.append(CheckItem(name, "ok", f"{free} GiB free on {roots[key] or nearest} for {where}"))
    return items


def transfer_paths(spec: BuildSpec) -> dict[str, str]:
    """The host paths a build moves files to or from (what a share must hold)."""
    from orchestrator.hyperv.plan import host_paths  # noqa: PLC0415

    p = host_paths(spec)
    return {"vm_path": p.vm_path, "export_path": p.export_path, "iso_path": p.iso_path}


def share_folder_for(paths: dict[str, str]) -> str:
    """The folder a share for these paths should serve: their common parent."""
    folders = [ntpath.normpath(v) for k, v in paths.items() if k != "iso_path"]
    folders.append(ntpath.dirname(ntpath.normpath(paths["iso_path"])))
    try:
        return ntpath.commonpath(folders)
    except ValueError:  # on different drives: one share cannot hold them
        return folders[0]


def _smb(spec: BuildSpec, facts: dict[str, str], smb: SmbLogin | None) -> list[CheckItem]:
    h = spec.host
    assert isinstance(h, HyperVHostSpec)
    if not h.smb_share:
        return [CheckItem("smb-share", "skipped", "the spec names no SMB share (host.smb_share)")]
    paths = transfer_paths(spec)
    if facts.get("smb.found") != "True":
        why = f" ({facts['smb.error']})" if facts.get("smb.error") else ""
        return [
            CheckItem(
                "smb-share",
                "fail",
                f"the host has no SMB share named '{h.smb_share}'{why}",
                fix=f"New-SmbShare -Name '{h.smb_share}' -Path '{share_folder_for(paths)}' "
                f"-ChangeAccess '{facts.get('host.user', 'ACCOUNT')}' (and allow TCP 445 from this "
                "machine, docs/hyperv.md), or remove host.smb_share",
            )
        ]
    folder = facts.get("smb.path", "")
    outside = {k: v for k, v in paths.items() if share_relative(folder, v) is None}
    if outside:
        listed = ", ".join(f"{k} {v}" for k, v in outside.items())
        return [
            CheckItem(
                "smb-share",
                "fail",
                f"share '{h.smb_share}' is {folder}, which does not hold {listed}: transfers through the "
                "share cannot reach them",
                fix=f"set those paths under {folder}, or share their common folder "
                f"{share_folder_for(paths)} (New-SmbShare), or remove host.smb_share",
            )
        ]
    access = facts.get("smb.access", "").replace("|", "; ")
    items = [CheckItem("smb-share", "ok", f"share '{h.smb_share}' is {folder} ({access})")]
    if smb is None:
        items.append(CheckItem("smb-connect", "skipped", "no SMB login given to the check"))
    else:
        items.append(_smb_connect(smb, folder))
    return items


def _smb_connect(login: SmbLogin, folder: str) -> CheckItem:
    """Log in to the share from this machine and list its top folder (reads only)."""
    session = SmbSession(login, folder)
    try:
        names = session.list_top()
    except TargetError as exc:
        return CheckItem("smb-connect", "fail", str(exc), fix=exc.hint)
    finally:
        session.close()
    return CheckItem(
        "smb-connect",
        "ok",
        f"logged in to {login.where} from this machine ({'encrypted' if login.encrypt else 'signed'}); "
        f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} at its top",
    )


class NotAHyperVSpecError(ValueError):
    """The spec's host is not a Hyper-V host: there is nothing to check."""


async def check_spec(spec_path: Path) -> HostCheckReport:
    """Load the spec at ``spec_path`` and check its Hyper-V host. Raises ``SpecError``,
    ``SecretError`` (the password reference) or :class:`NotAHyperVSpecError`."""
    from orchestrator.hyperv.connect import executor_for  # noqa: PLC0415
    from orchestrator.hyperv.transfer import transfer_options  # noqa: PLC0415
    from orchestrator.spec import load_spec  # noqa: PLC0415

    spec, _ = load_spec(spec_path)
    if not isinstance(spec.host, HyperVHostSpec):
        raise NotAHyperVSpecError(
            f"{spec_path}: host kind is {spec.host.kind}, not hyperv: "
            "`gmi-fsm hyperv check` checks a Hyper-V host"
        )
    base_dir = spec_path.resolve().parent
    executor = executor_for(spec.host, base_dir)
    smb = transfer_options(spec.host, base_dir).smb
    try:
        return await check_host(spec, executor, spec_name=str(spec_path), smb=smb)
    finally:
        await executor.close()
