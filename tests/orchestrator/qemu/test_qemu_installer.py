"""The QEMU host's ISO install: initrd seeding, ISO layouts, the preseed, and
recognising an installer that waits at a question (no VM here; see
tests/orchestrator/test_qemu_iso_install.py for the real installer)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from orchestrator.qemu.cpio import append_to_initrd, newc_archive
from orchestrator.qemu.installer import (
    DEBIAN_LAYOUTS,
    InstallerError,
    debian_seed_files,
    extract_boot_files,
    find_layout,
    has_gpt,
    installer_question,
    iso_volume_label,
    last_console_line,
)
from orchestrator.qemu.lab_iso import LabIsoError, write_netboot_iso

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq6 it\'s "quoted" build@host'

# What the real Debian 12 installer printed on the serial console here when the
# mirror served no .udeb files (captured from a run; ANSI codes and \r kept).
STUCK_CONSOLE = (
    b"\x1b[0mChecking the Debian archive mirror  ... 25%... 50%... 75%... 100%\r\n"
    b"Loading additional components  \r\n"
    b"Download installer components\r\n-----------------------------\r\n"
    b"The installer failed to download a file from the mirror. This may be a problem \r\n"
    b"with your network, or with the mirror. You can choose to retry the download, \r\n"
    b"select a different mirror, or cancel and choose another installation method.\r\n"
    b"Downloading a file failed:\r\n  1: Retry [*],  2: Change mirror,      3: Cancel,    \r\n"
    b"Prompt: '?' for help, default=1> "
)


def _cpio_list(archive: bytes) -> list[str]:
    out = subprocess.run(["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True)
    return out.stdout.decode().split()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool to read the archive back")
def test_newc_archive_reads_back_with_cpio(tmp_path: Path) -> None:
    archive = newc_archive({"preseed.cfg": (b"d-i x\n", 0o644), "gmi-late.sh": (b"#!/bin/sh\n", 0o755)})
    assert sorted(_cpio_list(archive)) == ["gmi-late.sh", "preseed.cfg"]
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "preseed.cfg").read_bytes() == b"d-i x\n"
    assert (tmp_path / "gmi-late.sh").stat().st_mode & 0o777 == 0o755


def test_appended_archive_follows_the_original_initrd_unchanged() -> None:
    original = gzip.compress(b"the installer's own archive")
    seeded = append_to_initrd(original, {"preseed.cfg": (b"answers", 0o644)})
    assert seeded.startswith(original)
    tail = gzip.decompress(seeded[len(original) :])
    assert b"preseed.cfg\0" in tail
    assert b"answers" in tail
    assert b"TRAILER!!!" in tail
    # Same answers, same bytes: the seeded initrd's digest is stable.
    assert seeded == append_to_initrd(original, {"preseed.cfg": (b"answers", 0o644)})


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", ""])
def test_cpio_refuses_names_that_leave_the_archive(name: str) -> None:
    with pytest.raises(ValueError, match="relative"):
        newc_archive({name: (b"", 0o644)})


def _iso(path: Path, files: dict[str, bytes], label: str = "TEST_ISO") -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    dirs: set[str] = set()
    for i, (name, data) in enumerate(sorted(files.items())):
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts)):
            d = "/" + "/".join(parts[:depth])
            if d not in dirs:
                dirs.add(d)
                iso.add_directory(f"/D{len(dirs)}", rr_name=parts[depth - 1], joliet_path=d)
        parent = "/" + "/".join(parts[:-1]) if len(parts) > 1 else ""
        iso_parent = f"/D{sorted(dirs).index(parent) + 1}" if parent else ""
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"{iso_parent}/F{i}.;1",
            rr_name=parts[-1],
            joliet_path=f"{parent}/{parts[-1]}",
        )
    iso.write(str(path))
    iso.close()
    return path


@pytest.mark.parametrize(
    ("files", "layout"),
    [
        ({"/install.amd/vmlinuz": b"K", "/install.amd/initrd.gz": b"I"}, DEBIAN_LAYOUTS[0]),
        ({"/linux": b"K", "/initrd.gz": b"I", "/README.txt": b"r"}, DEBIAN_LAYOUTS[1]),
    ],
)
def test_finds_the_kernel_of_each_debian_iso_layout(
    tmp_path: Path, files: dict[str, bytes], layout: object
) -> None:
    iso = _iso(tmp_path / "d.iso", files)
    found = find_layout(iso)
    assert found == layout
    kernel, initrd = extract_boot_files(iso, found, tmp_path / "boot")
    assert kernel.read_bytes() == b"K"
    assert initrd == b"I"
    assert iso_volume_label(iso) == "TEST_ISO"


def test_an_iso_without_an_installer_is_refused_with_what_was_looked_for(tmp_path: Path) -> None:
    iso = _iso(tmp_path / "ubuntu.iso", {"/casper/vmlinuz": b"K", "/casper/initrd": b"I"})
    with pytest.raises(InstallerError, match=r"no Debian installer kernel.*/install\.amd/vmlinuz") as exc:
        find_layout(iso)
    assert "netinst" in exc.value.hint


def test_a_file_that_is_not_an_iso_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.iso"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(InstallerError, match="not a readable ISO 9660 image"):
        find_layout(bad)


def test_preseed_answers_every_question_from_the_spec_values() -> None:
    files = debian_seed_files(
        user="genie",
        public_key=KEY,
        locale="de_DE.UTF-8",
        mirror="https://mirror.example.org:8443/debian/",
        proxy="http://proxy:3128",
    )
    preseed = files["preseed.cfg"][0].decode()
    assert "d-i debian-installer/locale string de_DE.UTF-8" in preseed
    assert "d-i mirror/protocol string https" in preseed
    assert "d-i mirror/https/hostname string mirror.example.org:8443" in preseed
    assert "d-i mirror/https/directory string /debian" in preseed
    assert "d-i mirror/https/proxy string http://proxy:3128" in preseed
    assert "d-i apt-setup/security_path string /debian-security" in preseed
    assert "d-i passwd/username string genie" in preseed
    assert "d-i preseed/late_command string sh /gmi-late.sh genie" in preseed
    assert "$iflabel{ gpt }" in preseed  # partman's own $-syntax survives the template
    assert "force-efi-extra-removable boolean true" in preseed
    assert "exit/poweroff boolean true" in preseed
    hashed = next(line for line in preseed.splitlines() if "user-password-crypted" in line)
    assert hashed.split()[-1].startswith("$6$")  # a SHA-512 crypt hash, never a password
    # The key travels as its own file, so no quoting of it can go wrong.
    assert KEY not in preseed
    assert files["gmi-authorized_keys"][0] == KEY.encode() + b"\n"
    assert files["gmi-late.sh"][1] == 0o755


def test_two_seeds_never_share_the_throwaway_password_hash() -> None:
    a = debian_seed_files(user="u", public_key=KEY, locale="C.UTF-8", mirror="http://m/debian")
    b = debian_seed_files(user="u", public_key=KEY, locale="C.UTF-8", mirror="http://m/debian")
    assert a["preseed.cfg"] != b["preseed.cfg"]


@pytest.mark.parametrize("mirror", ["ftp://m/debian", "deb.debian.org/debian", "http:///debian"])
def test_a_mirror_that_is_not_an_http_url_is_refused(mirror: str) -> None:
    with pytest.raises(InstallerError, match="http"):
        debian_seed_files(user="u", public_key=KEY, locale="C.UTF-8", mirror=mirror)


def test_the_late_script_is_valid_sh_and_locks_the_password() -> None:
    files = debian_seed_files(user="u", public_key=KEY, locale="C.UTF-8", mirror="http://m/debian")
    script = files["gmi-late.sh"][0]
    subprocess.run(["sh", "-n"], input=script, check=True)
    assert b"passwd -l" in script
    assert b"NOPASSWD:ALL" in script


def test_a_question_on_the_console_is_found_with_its_text() -> None:
    question = installer_question(STUCK_CONSOLE)
    assert question is not None
    assert question.startswith("Download installer components")
    assert "failed to download a file from the mirror" in question
    assert "1: Retry" in question


def test_the_status_line_redrawn_after_the_question_does_not_hide_it() -> None:
    # Captured here a minute after the prompt: screen's clock, then a cursor move.
    redraw = (
        b"\r\n\x1b[H\x1b[7m\x1b[m\x1b[32m\x1b[40m[           \x1b[37m\x1b[31m (\x1b[37m1*installer"
        b"\x1b[31m)\x1b[37m  2 shell  3 shell  4- log           \x1b[32m][\x1b[34m Nov 25 \x1b[37m23:56 "
        b"\x1b[32m]\r\n\x1b[19B\x1b[0m"
    )
    question = installer_question(STUCK_CONSOLE + redraw)
    assert question is not None
    assert question.startswith("Download installer components")
    assert "1*installer" not in last_console_line(STUCK_CONSOLE + redraw)


def test_progress_on_the_console_is_not_a_question() -> None:
    moving = STUCK_CONSOLE.split(b"Download installer")[0]
    assert installer_question(moving) is None
    assert last_console_line(moving) == "Loading additional components"
    assert installer_question(b"") is None


def test_gpt_header_is_recognised() -> None:
    head = bytearray(34 * 512)
    assert not has_gpt(bytes(head))
    head[512:520] = b"EFI PART"
    assert has_gpt(bytes(head))


def test_lab_iso_says_which_package_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LabIsoError, match="not installed") as exc:
        write_netboot_iso(tmp_path / "x.iso", netboot_dir=tmp_path / "nothing")
    assert "debian-installer-12-netboot-amd64" in exc.value.hint
    assert not (tmp_path / "x.iso").exists()


def test_lab_iso_has_the_mini_iso_layout(tmp_path: Path) -> None:
    src = tmp_path / "netboot"
    src.mkdir()
    (src / "linux").write_bytes(b"kernel")
    (src / "initrd.gz").write_bytes(b"initrd")
    iso = write_netboot_iso(tmp_path / "out" / "lab.iso", netboot_dir=src)
    assert find_layout(iso).name.endswith("mini.iso)")
    assert [p.name for p in iso.parent.iterdir()] == ["lab.iso"]  # no temp file left
