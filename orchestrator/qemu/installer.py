"""An unattended install from an OS installer ISO, on the QEMU host.

The Debian installer reads an answer file (a preseed) from its own initrd before it
asks anything, so the QEMU host needs no console typing: it takes the installer's
kernel and initrd out of the ISO, appends ``/preseed.cfg`` (and the build user's key)
to the initrd, boots that kernel through OVMF (so the installer sees UEFI and
installs GRUB for EFI, as on a Hyper-V Gen 2 VM), with the ISO in a DVD drive, and
waits for the installer to power the VM off.

An installer that stops at a question waits forever; the text frontend on the serial
console shows it as a ``Prompt:`` line, so the host fails the step with the question
instead of waiting out the install timeout.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from orchestrator import procs

__all__ = [
    "DEBIAN_LAYOUTS",
    "INSTALL_CMDLINE",
    "InstallerError",
    "InstallerLayout",
    "console_lines",
    "debian_seed_files",
    "extract_boot_files",
    "find_layout",
    "has_gpt",
    "installer_question",
    "iso_volume_label",
    "last_console_line",
]


class InstallerError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class InstallerLayout:
    """Where an installer ISO keeps the kernel and initrd to boot."""

    name: str
    kernel: str
    initrd: str


# Data: the Debian ISOs' layouts, most common first.
DEBIAN_LAYOUTS: tuple[InstallerLayout, ...] = (
    InstallerLayout("debian-installer (netinst/DVD)", "/install.amd/vmlinuz", "/install.amd/initrd.gz"),
    InstallerLayout("debian-installer (netboot, mini.iso)", "/linux", "/initrd.gz"),
)

# auto/priority=critical: ask nothing the preseed does not answer. The text frontend
# writes questions to the serial console, where installer_question() finds them.
INSTALL_CMDLINE = "auto=true priority=critical DEBIAN_FRONTEND=text console=ttyS0,115200n8"


def _open(iso: Path) -> pycdlib.PyCdlib:
    img = pycdlib.PyCdlib()
    try:
        img.open(str(iso))
    except (PyCdlibException, OSError) as exc:
        raise InstallerError(
            f"{iso} is not a readable ISO 9660 image: {exc}",
            hint="check source.iso points at the installer ISO and the download is complete (sha256)",
        ) from None
    return img


def _name_kind(img: pycdlib.PyCdlib) -> str:
    if img.has_rock_ridge():
        return "rr_path"
    if img.has_joliet():
        return "joliet_path"
    raise InstallerError("the ISO has neither Rock Ridge nor Joliet names (not an OS installer ISO)")


def _exists(img: pycdlib.PyCdlib, kind: str, path: str) -> bool:
    try:
        img.get_record(**{kind: path})
    except PyCdlibException:
        return False
    return True


def iso_volume_label(iso: Path) -> str:
    img = _open(iso)
    try:
        ident: bytes = img.pvd.volume_identifier
        return ident.decode("ascii", "replace").strip()
    finally:
        img.close()


def find_layout(iso: Path, layouts: tuple[InstallerLayout, ...] = DEBIAN_LAYOUTS) -> InstallerLayout:
    """The first of ``layouts`` whose kernel and initrd are both on ``iso``."""
    img = _open(iso)
    try:
        kind = _name_kind(img)
        for layout in layouts:
            if _exists(img, kind, layout.kernel) and _exists(img, kind, layout.initrd):
                return layout
    finally:
        img.close()
    looked = ", ".join(f"{x.kernel} + {x.initrd}" for x in layouts)
    raise InstallerError(
        f"{iso} holds no Debian installer kernel and initrd (looked for {looked})",
        hint="use a Debian netinst, DVD or netboot (mini.iso) image for amd64",
    )


def extract_boot_files(iso: Path, layout: InstallerLayout, dest: Path) -> tuple[Path, bytes]:
    """Copy the kernel to ``dest``/vmlinuz; return it and the initrd's bytes."""
    img = _open(iso)
    try:
        kind = _name_kind(img)
        dest.mkdir(parents=True, exist_ok=True)
        kernel = dest / "vmlinuz"
        img.get_file_from_iso(str(kernel), **{kind: layout.kernel})
        buf = io.BytesIO()
        img.get_file_from_iso_fp(buf, **{kind: layout.initrd})
    finally:
        img.close()
    return kernel, buf.getvalue()


def _hash_unknown_password() -> str:
    """A SHA-512 crypt hash of a random password nobody keeps: the installer insists on
    a password for the user it makes; /gmi-late.sh locks it."""
    try:
        out = procs.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input_bytes=secrets.token_urlsafe(32).encode(),
            record_stdout=False,
        )
    except OSError as exc:
        out = subprocess.CompletedProcess([], 127, b"", str(exc).encode())
    if out.returncode != 0:
        raise InstallerError(
            "cannot hash the installer's throwaway password with openssl: "
            + out.stderr.decode("utf-8", "replace").strip()[-300:],
            hint="install openssl (apt-get install openssl)",
        )
    return out.stdout.decode().strip()


def _mirror_parts(mirror: str) -> tuple[str, str, str]:
    url = urlsplit(mirror)
    if url.scheme not in ("http", "https") or not url.hostname:
        msg = f"mirror must be an http(s) URL such as http://deb.debian.org/debian, not {mirror!r}"
        raise InstallerError(msg)
    host = url.hostname + (f":{url.port}" if url.port else "")
    return url.scheme, host, url.path.rstrip("/") or "/"


def debian_seed_files(
    *,
    user: str,
    public_key: str,
    locale: str,
    mirror: str,
    proxy: str = "",
    packages: tuple[str, ...] = ("openssh-server", "sudo", "cloud-init", "locales"),
) -> dict[str, tuple[bytes, int]]:
    """The files added to the installer's initrd: the preseed, the key, the late script."""
    scheme, host, directory = _mirror_parts(mirror)
    template = resources.files("orchestrator.qemu").joinpath("installers/debian-preseed.cfg").read_text()
    preseed = Template(template).substitute(
        locale=locale,
        user=user,
        password_hash=_hash_unknown_password(),
        mirror_protocol=scheme,
        mirror_host=host,
        mirror_directory=directory,
        mirror_proxy=proxy,
        # Debian serves security updates beside the archive: /debian -> /debian-security.
        security_directory=f"{directory}-security",
        packages=" ".join(packages),
    )
    late = resources.files("orchestrator.qemu").joinpath("installers/debian-late.sh").read_bytes()
    return {
        "preseed.cfg": (preseed.encode("utf-8"), 0o644),
        "gmi-authorized_keys": (public_key.strip().encode("ascii") + b"\n", 0o644),
        "gmi-late.sh": (late, 0o755),
    }


# -- watching the installer's serial console ---------------------------------------

_ANSI = re.compile(rb"\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b\x0c\x0e-\x1f]")
_PROMPT = "Prompt: '?' for help"
# The installer runs under `screen`, whose status line (window list and a clock) is
# redrawn every minute, after whatever the installer printed last.
_STATUS_LINE = re.compile(r"\(1\*installer\)\s+2 shell")


def console_lines(console: bytes) -> list[str]:
    """Readable lines of the serial console: escape sequences and status lines removed."""
    text = _ANSI.sub(b"", console.replace(b"\r", b"\n")).decode("utf-8", "replace")
    return [line.rstrip() for line in text.split("\n") if line.strip() and not _STATUS_LINE.search(line)]


def last_console_line(console: bytes) -> str:
    """The last readable line of the console (progress for the user)."""
    lines = console_lines(console[-8192:])
    return lines[-1][:200] if lines else ""


def installer_question(console: bytes) -> str | None:
    """If the installer now waits at a question, its text (title, text and choices)."""
    lines = console_lines(console[-16384:])
    if not lines or _PROMPT not in lines[-1]:
        return None
    # A question is laid out as: title, a line of dashes, its text, choices, "Prompt:".
    start = max(0, len(lines) - 14)
    for i in range(len(lines) - 1, start, -1):
        if set(lines[i]) == {"-"} and i > 0:
            start = i - 1
            break
    return "\n".join(lines[start:])


def has_gpt(disk_head: bytes) -> bool:
    """Whether the first sectors of a disk hold a GPT header (LBA 1, 512-byte sectors)."""
    return disk_head[512 : 512 + 8] == b"EFI PART"
