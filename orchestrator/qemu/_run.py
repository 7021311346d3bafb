"""Run an external tool with an argv list and turn failures into actionable errors.

Every module in this package shells out (qemu-img, mmdebstrap, sfdisk, mkfs.*); one
helper keeps the error shape identical: what failed, where, and how to fix it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator import procs


class QemuToolError(RuntimeError):
    """An external tool failed or is missing. ``hint`` says how to fix it."""

    def __init__(self, what: str, *, where: str = "", hint: str = "", output: str = "") -> None:
        parts = [what]
        if where:
            parts.append(f"where: {where}")
        if output:
            parts.append(f"output (tail):\n{output[-2000:]}")
        if hint:
            parts.append(f"fix: {hint}")
        super().__init__("\n".join(parts))
        self.what = what
        self.where = where
        self.hint = hint
        self.output = output


# Which Debian package provides each tool, so a missing tool names its install command.
APT_PACKAGE_FOR_TOOL: Mapping[str, str] = {
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mcopy": "mtools",
    "mmd": "mtools",
    "grub-mkstandalone": "grub-efi-amd64-bin",
    "ssh-keygen": "openssh-client",
}


def require_tool(name: str) -> str:
    """Return the absolute path of ``name`` or raise with the package to install."""
    found = shutil.which(name)
    if found is None:
        package = APT_PACKAGE_FOR_TOOL.get(name, name)
        raise QemuToolError(
            f"required tool {name!r} not found on PATH",
            hint=f"apt-get install -y --no-install-recommends {package}",
        )
    return found


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    where: Path | str = "",
    hint: str = "",
    timeout_s: float | None = None,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell, contained, and recorded inside a step: see
    :func:`orchestrator.procs.run`); raise :class:`QemuToolError` on failure."""
    exe = require_tool(argv[0])
    try:
        done = procs.run(
            [exe, *argv[1:]],
            input_bytes=None if input_text is None else input_text.encode("utf-8"),
            timeout_s=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise QemuToolError(
            f"{what}: {argv[0]} timed out after {timeout_s} s",
            where=str(where),
            hint=hint,
        ) from exc
    proc = subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
    if proc.returncode != 0:
        raise QemuToolError(
            f"{what}: {argv[0]} exited {proc.returncode}",
            where=str(where),
            hint=hint,
            output=(proc.stdout + proc.stderr),
        )
    return proc
