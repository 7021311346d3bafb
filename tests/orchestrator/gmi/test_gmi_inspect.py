"""`validate --inspect`: the leftover decisions (pure), and a real libguestfs look
inside tiny ext4 images converted to VHDX (marked vm: boots the libguestfs appliance,
~15-30 s under TCG)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.gmi.inspect import contract_checks, inspect_disk
from states import sealed_image
from states.sealed_image import BuildFacts
from tests.support.sealed_plants import HOSTNAME, PLANTS, USER, clean_root


def test_each_contract_item_is_a_check_naming_its_leftovers() -> None:
    found = {it.id: [] for it in sealed_image.items()}
    found["ssh-host-keys"] = ["/etc/ssh/ssh_host_rsa_key"]
    checks = {c.name: c for c in contract_checks(found)}
    assert len(checks) == len(sealed_image.items())
    assert not checks["inspect.ssh-host-keys"].ok
    assert "/etc/ssh/ssh_host_rsa_key" in checks["inspect.ssh-host-keys"].evidence
    assert all(c.ok for n, c in checks.items() if n != "inspect.ssh-host-keys")


def _guest_image(tmp: Path, root: Path) -> Path:
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    raw = tmp / f"{root.name}.raw"
    with raw.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(root), str(raw)], check=True)
    vhdx = tmp / f"{root.name}.vhdx"
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
def test_inspect_names_every_leftover_in_a_real_disk(tmp_path: Path) -> None:
    # Every leftover in one disk (one appliance boot): each item names its own.
    root = clean_root(tmp_path, "dirty")
    for item_id, plant in PLANTS.items():
        if item_id != "dbus-machine-id":  # the link to machine-id stays a link: its leftover shows through it
            plant(root)
    facts = BuildFacts(user=USER, hostname=HOSTNAME, remove_user=True)
    checks = {c.name: c for c in inspect_disk(_guest_image(tmp_path, root), facts)}
    assert checks["inspect.disk"].ok, checks["inspect.disk"].evidence
    offline = [it for it in sealed_image.items() if "offline" in it.phases]
    bad = [it.id for it in offline if checks[f"inspect.{it.id}"].ok]
    assert not bad, f"not named: {bad}"
    assert "/etc/ssh/ssh_host_ed25519_key" in checks["inspect.ssh-host-keys"].evidence
    # Resolved inside the guest's tree, not the appliance's own /etc/machine-id.
    assert "/var/lib/dbus/machine-id is not empty" in checks["inspect.dbus-machine-id"].evidence


@pytest.mark.vm
@needs_guestfs
def test_inspect_passes_a_clean_disk(tmp_path: Path) -> None:
    facts = BuildFacts(user=USER, hostname=HOSTNAME, remove_user=True)
    checks = inspect_disk(_guest_image(tmp_path, clean_root(tmp_path, "clean")), facts)
    assert all(c.ok for c in checks), [(c.name, c.evidence) for c in checks if not c.ok]


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


def test_without_the_build_user_its_items_are_skipped_not_passed() -> None:
    found = {it.id: [] for it in sealed_image.items()}
    checks = {c.name: c.status for c in contract_checks(found, facts=BuildFacts())}
    assert checks["inspect.build-user-sudo"] == "skip" and checks["inspect.build-user"] == "skip"
    assert checks["inspect.ssh-host-keys"] == "pass"


def test_the_build_key_is_tried_for_every_user_nologin_ones_too() -> None:
    from orchestrator.gmi.build_access import login_users  # noqa: PLC0415

    passwd = "root:x:0:0::/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\ngenie:x:1000:1000::/home/genie:/bin/sh\n"
    assert login_users(passwd, "gmi") == ["root", "gmi", "www-data", "genie"]
