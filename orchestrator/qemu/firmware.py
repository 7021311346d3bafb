"""Find OVMF (UEFI firmware for qemu) and give each VM its own writable VARS copy.

A Hyper-V Gen 2 VM boots UEFI, so the lab boots the same way. OVMF ships as a
read-only CODE image and a VARS template; the VARS store is written by the firmware
(boot entries), so every VM gets a private copy and the template stays pristine.
CODE and VARS must come from the same build and size (2M vs 4M), so they are looked
up as pairs, never mixed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OVMF_CANDIDATES", "FirmwareNotFoundError", "OvmfFirmware", "find_ovmf"]

# (code, vars) pairs in order of preference.
OVMF_CANDIDATES: tuple[tuple[str, str], ...] = (
    # Debian/Ubuntu (package ovmf): the 4M build is the current default.
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    # Fedora/RHEL (edk2-ovmf).
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    # Arch (edk2-ovmf).
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
    ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
    # qemu's own bundled copy (e.g. Homebrew, source builds).
    ("/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"),
)

# Explicit override for unusual layouts; both must be set.
ENV_CODE = "GMI_OVMF_CODE"
ENV_VARS = "GMI_OVMF_VARS"


class FirmwareNotFoundError(FileNotFoundError):
    """No usable OVMF pair was found; the message says what to install."""


@dataclass(frozen=True, slots=True)
class OvmfFirmware:
    """A matching OVMF CODE image (read-only) and VARS template."""

    code: Path
    vars_template: Path

    def copy_vars(self, dest: Path) -> Path:
        """Copy the VARS template to ``dest`` (a per-VM file qemu may write to)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.vars_template, dest)
        dest.chmod(0o600)
        return dest

    def pflash_args(self, vars_copy: Path) -> list[str]:
        """qemu arguments mapping CODE (read-only) and the VM's VARS copy as pflash."""
        return [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={self.code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]


def find_ovmf(candidates: Sequence[tuple[str, str]] | None = None) -> OvmfFirmware:
    """Return the first OVMF pair that exists; ``$GMI_OVMF_CODE``/``$GMI_OVMF_VARS`` win."""
    env_code, env_vars = os.environ.get(ENV_CODE), os.environ.get(ENV_VARS)
    pairs: list[tuple[str, str]] = []
    if env_code and env_vars:
        pairs.append((env_code, env_vars))
    pairs.extend(OVMF_CANDIDATES if candidates is None else candidates)
    for code, vars_template in pairs:
        if Path(code).is_file() and Path(vars_template).is_file():
            return OvmfFirmware(Path(code), Path(vars_template))
    looked = "\n  ".join(f"{c} + {v}" for c, v in pairs)
    raise FirmwareNotFoundError(
        "UEFI firmware (OVMF) not found; looked for:\n  "
        f"{looked}\n"
        "fix: apt-get install -y --no-install-recommends ovmf "
        "(Fedora: dnf install edk2-ovmf; Arch: pacman -S edk2-ovmf), "
        f"or set {ENV_CODE} and {ENV_VARS} to a matching pair"
    )
