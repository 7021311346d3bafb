"""The guest-side checks of the boot-based validate stage, as pure functions.

The validate stage boots a throwaway copy of the GMI with a fresh NoCloud seed, runs
:func:`probes` in the guest (over SSH, as the seed's user), and hands the outputs to
:func:`evaluate`. Nothing here talks to a VM: the decisions are tested on recorded
outputs, and the wiring lives with the host that boots the copy.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.gmi.report import Check, check, failed, skipped
from states import sealed_image

MACHINE_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Probe:
    """A read-only command to run in the booted copy (a POSIX sh script)."""

    name: str
    command: str
    sudo: bool = False
    timeout_s: float = 60.0
    args: tuple[str, ...] = ()  # "$1"...: values never go into the text


@dataclass(frozen=True, slots=True)
class Output:
    stdout: str
    exit_code: int | None
    stderr: str = ""


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the first boot must have produced, and what must differ from the build.

    ``hostname``/``user`` come from the fresh seed; ``build_machine_id`` and
    ``build_host_key_fingerprint`` from the build's facts (``guest.machine_id``,
    ``guest.ssh_host_key_fingerprint``); ``daemons`` from ``hyperv.daemons``.
    """

    hostname: str
    user: str
    daemons: tuple[str, ...] = ()
    build_machine_id: str = ""
    build_host_key_fingerprint: str = ""
    hyperv: bool = True  # False on QEMU: no Hyper-V VMBus, so the daemons cannot run
    build_user: str = ""
    build_hostname: str = ""
    build_user_removed: bool = False


def probes(expect: Expectations) -> list[Probe]:
    """The commands :func:`evaluate` needs, in the order to run them."""
    units = " ".join(shlex.quote(d) for d in expect.daemons) or "hv-kvp-daemon"
    return [
        # --wait: provisioning while first-boot cloud-init runs races apt locks.
        Probe("cloud_init", "cloud-init status --long --wait", timeout_s=900.0),
        Probe("hostname", "hostname"),
        Probe("machine_id", "cat /etc/machine-id"),
        Probe("ssh_keys", "ls -1 /etc/ssh"),
        Probe(
            "ssh_fingerprint",
            "for k in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub "
            '/etc/ssh/ssh_host_rsa_key.pub; do [ -f "$k" ] && ssh-keygen -lf "$k"; done; true',
        ),
        Probe("user", f"getent passwd {shlex.quote(expect.user)}"),
        Probe("network", "ip -o -4 addr show scope global"),
        Probe("hv_daemons", f"systemctl is-active {units}"),
        Probe("failed_units", "systemctl --failed --no-legend --plain"),
        # The sealed-image contract's boot items (states/sealed_image.yaml).
        Probe(
            "sealed",
            sealed_image.check_script("boot"),
            sudo=True,
            args=(expect.build_user, expect.build_hostname, "yes" if expect.build_user_removed else "no"),
        ),
        Probe(
            "journal",
            "echo boots=$(journalctl --list-boots --no-pager 2>/dev/null | grep -cE '[0-9a-f]{32}'); "
            "echo machine_id=$(cat /etc/machine-id); "
            "ls -1 /var/log/journal 2>/dev/null | sed 's/^/dir=/'; true",
            sudo=True,
        ),
        Probe("passwd", "getent passwd"),
    ]


def _get(outputs: Mapping[str, Output], name: str) -> Output | None:
    return outputs.get(name)


def check_cloud_init(out: Output | None) -> Check:
    name = "boot.cloud_init"
    if out is None:
        return failed(name, "`cloud-init status --long` was not run")
    status = _field(out.stdout, "status")
    errors = _field(out.stdout, "errors")
    source = next((ln.strip() for ln in out.stdout.splitlines() if "DataSource" in ln), "")
    ok = out.exit_code == 0 and status == "done" and errors in ("", "[]")
    return check(
        name,
        ok,
        f"status done, no errors ({source or 'datasource not shown'})",
        f"cloud-init status {status or '?'} (exit {out.exit_code}), errors {errors or 'n/a'}: "
        + _tail(out.stdout + out.stderr),
    )


def check_hostname(out: Output | None, expected: str) -> Check:
    got = out.stdout.strip() if out else ""
    return check(
        "boot.hostname",
        got == expected,
        f"hostname {got!r} set from the seed",
        f"hostname is {got!r}, the seed asked for {expected!r} (cloud-init did not apply it)",
    )


def check_machine_id(out: Output | None, build_id: str) -> Check:
    got = out.stdout.strip() if out else ""
    if not MACHINE_ID_RE.match(got):
        return failed("boot.machine_id", f"/etc/machine-id is {got!r}: not generated on first boot")
    return check(
        "boot.machine_id",
        not build_id or got != build_id.strip(),
        f"fresh machine-id {got[:8]}…",
        f"machine-id {got} is the build VM's: it was not cleared before sealing",
    )


def check_ssh_keys(keys: Output | None, fingerprints: Output | None, build_fingerprint: str) -> Check:
    name = "boot.ssh_host_keys"
    listed = [ln.strip() for ln in (keys.stdout if keys else "").splitlines()]
    host_keys = [k for k in listed if k.startswith("ssh_host_") and k.endswith("_key")]
    if not host_keys:
        return failed(name, "no /etc/ssh/ssh_host_*_key after first boot: sshd cannot start")
    prints = re.findall(r"SHA256:[A-Za-z0-9+/=]+", fingerprints.stdout if fingerprints else "")
    if build_fingerprint and build_fingerprint in prints:
        return failed(name, f"host key {build_fingerprint} is the build VM's: keys were not removed at seal")
    return check(name, True, f"regenerated: {', '.join(host_keys)}", "")


def check_user(out: Output | None, user: str) -> Check:
    ok = out is not None and out.exit_code == 0 and out.stdout.startswith(f"{user}:")
    return check(
        "boot.user",
        ok,
        f"user {user!r} created by cloud-init",
        f"user {user!r} does not exist (getent exit {out.exit_code if out else None})",
    )


def check_network(out: Output | None) -> Check:
    addrs = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)", out.stdout if out else "")
    return check(
        "boot.network",
        bool(addrs),
        f"DHCP gave {', '.join(addrs)}",
        "no global IPv4 address: DHCP did not configure the network (installer netplan tied to a MAC?)",
    )


def check_daemons(out: Output | None, daemons: Sequence[str], hyperv: bool) -> Check:
    name = "boot.hyperv_daemons"
    if not hyperv:
        return skipped(name, "not on Hyper-V: the KVP/VSS daemons need VMBus and do not start under QEMU")
    states = [ln.strip() for ln in (out.stdout if out else "").splitlines() if ln.strip()]
    pairs = list(zip(daemons or ("hv-kvp-daemon",), states, strict=False))
    bad = [f"{d}={s}" for d, s in pairs if s != "active"]
    if len(states) < len(daemons or ("hv-kvp-daemon",)):
        bad.append("missing states")
    return check(
        name,
        not bad,
        "active: " + ", ".join(d for d, _ in pairs),
        "integration services not running: " + ", ".join(bad),
    )


# Hyper-V daemons whose units fail where there is no VMBus (QEMU): expected there.
_HV_UNIT_PREFIXES = ("hv-", "hv_", "hyperv")


def check_failed_units(out: Output | None, *, hyperv: bool = True) -> Check:
    units = [ln.split()[0] for ln in (out.stdout if out else "").splitlines() if ln.strip()]
    excused = [] if hyperv else [u for u in units if u.startswith(_HV_UNIT_PREFIXES)]
    units = [u for u in units if u not in excused]
    note = f" (not on Hyper-V, so expected to fail: {', '.join(excused)})" if excused else ""
    return check(
        "boot.failed_units",
        out is not None and not units,
        "no failed systemd units" + note,
        f"failed units: {', '.join(units)}" if units else "`systemctl --failed` was not run",
    )


def check_sealed(out: Output | None) -> list[Check]:
    """One check per boot item of the sealed-image contract, from the check script's listing."""
    what = {it.id: it.what for it in sealed_image.for_phase("boot")}
    if out is None or out.exit_code != 0:
        why = "not run" if out is None else f"exit {out.exit_code}: {_tail(out.stderr)}"
        return [failed("boot.sealed", f"the sealed-image check script failed ({why})")]
    left: dict[str, list[str]] = {}
    seen: set[str] = set()
    for line in out.stdout.splitlines():
        m = re.match(r"^(ok|leftover) ([a-z0-9-]+)(?:: (.*))?$", line)
        if m and m.group(2) in what:
            seen.add(m.group(2))
            if m.group(1) == "leftover":
                left.setdefault(m.group(2), []).append(m.group(3) or "")
    unreported = ["not reported by the check script"]
    return [
        check(
            f"boot.sealed.{item_id}",
            item_id in seen and item_id not in left,
            f"none left: {desc}",
            f"left in the image: {desc}: {'; '.join(left.get(item_id, unreported))}",
        )
        for item_id, desc in what.items()
    ]


def check_journal(out: Output | None) -> Check:
    """No journal from before the copy's first boot: one boot, one machine's folder."""
    name = "boot.sealed.journal"
    text = out.stdout if out else ""
    boots = _field_eq(text, "boots")
    mid = _field_eq(text, "machine_id")
    dirs = [ln[4:] for ln in text.splitlines() if ln.startswith("dir=")]
    foreign = [d for d in dirs if d != mid]
    return check(
        name,
        boots == "1" and not foreign,
        "the journal starts at this copy's first boot (one boot, its own machine-id folder)",
        f"journal from before first boot: {boots or '?'} boots listed"
        + (f", folders of other machines: {', '.join(foreign)}" if foreign else ""),
    )


def _field_eq(text: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}=(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def evaluate(outputs: Mapping[str, Output], expect: Expectations) -> list[Check]:
    """Decide every boot check from the probes' outputs (keyed by :class:`Probe` name)."""
    return [
        check_cloud_init(_get(outputs, "cloud_init")),
        check_hostname(_get(outputs, "hostname"), expect.hostname),
        check_machine_id(_get(outputs, "machine_id"), expect.build_machine_id),
        check_ssh_keys(
            _get(outputs, "ssh_keys"), _get(outputs, "ssh_fingerprint"), expect.build_host_key_fingerprint
        ),
        check_user(_get(outputs, "user"), expect.user),
        check_network(_get(outputs, "network")),
        check_daemons(_get(outputs, "hv_daemons"), expect.daemons, expect.hyperv),
        check_failed_units(_get(outputs, "failed_units"), hyperv=expect.hyperv),
        *check_sealed(_get(outputs, "sealed")),
        check_journal(_get(outputs, "journal")),
    ]


def _field(text: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def _tail(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text[-limit:]
