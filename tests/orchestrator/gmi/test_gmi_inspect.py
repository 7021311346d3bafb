"""`validate --inspect`: the leftover decisions (pure), and a real libguestfs look
inside tiny ext4 images converted to VHDX (marked vm: boots the libguestfs appliance,
~15-30 s under TCG)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.gmi.inspect import Leftovers, inspect_disk, leftover_checks


def test_clean_leftovers_pass() -> None:
    checks = leftover_checks(Leftovers(machine_id="", journal_kib=8))
    assert all(c.ok for c in checks), checks


def test_each_leftover_is_named() -> None:
    found = Leftovers(
        host_keys=["/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_rsa_key.pub"],
        machine_id="0123456789abcdef0123456789abcdef\n",
        histories=["/root/.bash_history", "/home/genie/.bash_history"],
        cloud_instance=["/var/lib/cloud/instances/iid-local01", "/var/lib/cloud/instance"],
        journal_kib=90_000,
    )
    evidence = {c.name: c.evidence for c in leftover_checks(found) if not c.ok}
    assert "/etc/ssh/ssh_host_rsa_key" in evidence["inspect.ssh_host_keys"]
    assert "0123456789abcdef" in evidence["inspect.machine_id"]
    assert "/home/genie/.bash_history" in evidence["inspect.shell_history"]
    assert "iid-local01" in evidence["inspect.cloud_init_instance"]
    assert "90000 KiB" in evidence["inspect.journal"]


def _guest_image(tmp: Path, *, dirty: bool) -> Path:
    root = tmp / "root"
    for d in ("etc/ssh", "root", "home/genie", "var/lib/cloud/instances", "var/log/journal", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    (root / "etc/machine-id").write_text("")
    if dirty:
        (root / "etc/ssh/ssh_host_ed25519_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA build\n")
        (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        (root / "home/genie/.bash_history").write_text("sudo apt-get install secrets\n")
        (root / "var/lib/cloud/instances/iid-build").mkdir()
        (root / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/iid-build")
    raw = tmp / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(root), str(raw)], check=True)
    vhdx = tmp / "disk.vhdx"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", str(raw), str(vhdx)],
        check=True,
    )
    return vhdx


needs_guestfs = pytest.mark.skipif(
    shutil.which("guestfish") is None or shutil.which("mkfs.ext4") is None,
    reason="libguestfs-tools (and e2fsprogs) not installed",
)


@pytest.mark.vm
@needs_guestfs
def test_inspect_finds_planted_leftovers(tmp_path: Path) -> None:
    checks = {c.name: c for c in inspect_disk(_guest_image(tmp_path, dirty=True))}
    assert checks["inspect.disk"].ok, checks["inspect.disk"].evidence
    assert not checks["inspect.ssh_host_keys"].ok
    assert "/etc/ssh/ssh_host_ed25519_key" in checks["inspect.ssh_host_keys"].evidence
    assert not checks["inspect.machine_id"].ok and "0123456789abcdef" in checks["inspect.machine_id"].evidence
    assert "/home/genie/.bash_history" in checks["inspect.shell_history"].evidence
    assert "/var/lib/cloud/instance" in checks["inspect.cloud_init_instance"].evidence


@pytest.mark.vm
@needs_guestfs
def test_inspect_passes_a_clean_disk(tmp_path: Path) -> None:
    checks = inspect_disk(_guest_image(tmp_path, dirty=False))
    assert all(c.ok for c in checks), [(c.name, c.evidence) for c in checks]


def test_validate_inspect_hands_the_extracted_disk_to_the_inspector(hyperv_build) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.gmi.hashing import sha256_file  # noqa: PLC0415
    from orchestrator.gmi.report import passed  # noqa: PLC0415
    from orchestrator.gmi.validate import validate  # noqa: PLC0415
    from tests.support.gmi_fixtures import NAMES  # noqa: PLC0415

    seen: list[str] = []

    def fake(disk: Path):  # type: ignore[no-untyped-def]
        seen.append(sha256_file(disk)[0])
        return [passed("inspect.disk", "fake")]

    report = validate(hyperv_build.out / NAMES.zip, inspect=True, inspector=fake)
    assert report.ok and seen == [sha256_file(hyperv_build.disk)[0]]
