"""Thin wrappers over ``qemu-img``: work copies, info, VHDX export and compaction, checks.

Formats are always passed explicitly (``-f``/``-F``): letting qemu probe a raw
image is unsafe (a guest can write a qcow2 header into it) and slower.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import procs
from orchestrator.qemu._run import QemuToolError, require_tool, run_tool
from orchestrator.qemu.ext4_journal import JournalZeroing, zero_journals

__all__ = [
    "DISK_FORMATS",
    "CheckResult",
    "Compaction",
    "check",
    "compact_to_vhdx",
    "convert_to_vhdx",
    "create_work_copy",
    "detect_format",
    "info",
]

DISK_FORMATS = ("raw", "qcow2", "vhdx")

# 1 MiB blocks: measured 539 MB vs 646 MB for qemu's default 16 MiB on a 2 GiB disk
# with 492 MiB in use; Hyper-V's own default for dynamic VHDX is also small blocks.
VHDX_OPTIONS = "subformat=dynamic,block_size=1048576"

_FORMAT_BY_SUFFIX = {".raw": "raw", ".img": "raw", ".qcow2": "qcow2", ".vhdx": "vhdx"}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``qemu-img check`` outcome. Raw images have nothing to check (``supported``)."""

    ok: bool
    supported: bool
    output: str


def detect_format(path: Path) -> str:
    """The disk format from the file suffix (.raw/.img/.qcow2/.vhdx)."""
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the disk format of {path} from its suffix; "
            f"name it .raw/.qcow2/.vhdx or pass the format explicitly"
        )
    return fmt


def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` as a dict (virtual-size, actual-size, format...)."""
    fmt = fmt or detect_format(path)
    proc = run_tool(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
        what="reading disk info",
        where=path,
        hint="is the file a disk of that format, and not in use by a running VM?",
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def create_work_copy(
    base: Path,
    dest: Path,
    *,
    base_format: str | None = None,
    linked: bool = False,
    size_gib: int | None = None,
) -> Path:
    """Make a qcow2 work disk from ``base`` (raw/qcow2/vhdx) so the base stays untouched.

    ``linked=True`` creates a thin overlay with ``base`` as backing file (instant, but
    the base must stay in place and unchanged); otherwise a full independent copy.
    ``size_gib`` grows the virtual disk (the guest's filesystem is not resized).
    """
    base = base.resolve()
    base_format = base_format or detect_format(base)
    if base_format not in DISK_FORMATS:
        raise ValueError(f"unsupported base format {base_format!r}; one of {DISK_FORMATS}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dest)
    try:
        if linked:
            argv = ["qemu-img", "create", "-f", "qcow2", "-b", str(base), "-F", base_format, str(tmp)]
        else:
            argv = ["qemu-img", "convert", "-f", base_format, "-O", "qcow2", str(base), str(tmp)]
        run_tool(
            argv,
            what="creating a work copy of the base disk",
            where=f"{base} -> {dest}",
            hint="check free space in the destination and that the base is readable",
        )
        if size_gib is not None:
            run_tool(
                ["qemu-img", "resize", "-f", "qcow2", str(tmp), f"{size_gib}G"],
                what="resizing the work copy",
                where=dest,
                hint="the new size must not be smaller than the base",
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def convert_to_vhdx(src: Path, dst: Path, *, src_format: str | None = None) -> Path:
    """Convert ``src`` to a dynamic VHDX with 1 MiB blocks; ``dst`` appears only when done."""
    src_format = src_format or detect_format(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dst)
    try:
        _convert_checked_vhdx(src, src_format, tmp, dst)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


@dataclass(frozen=True, slots=True)
class Compaction:
    """A VHDX made by :func:`compact_to_vhdx`, and what was zeroed on the way."""

    path: Path
    journals: tuple[JournalZeroing, ...]

    @property
    def journal_zeroed_bytes(self) -> int:
        return sum(j.zeroed_bytes for j in self.journals)

    @property
    def journal_nonzero_bytes(self) -> int:
        """Of the zeroed bytes, those that held (stale) data."""
        return sum(j.nonzero_bytes for j in self.journals)

    @property
    def journal_skipped(self) -> str:
        """``"where: reason; ..."`` for every ext filesystem left as it was, or ""."""
        return "; ".join(f"{j.where}: {j.skipped}" for j in self.journals if j.skipped)


def compact_to_vhdx(src: Path, dst: Path, *, src_format: str | None = None) -> Compaction:
    """Compact a powered-off VM's disk into a dynamic VHDX with 1 MiB blocks.

    ``src`` is expanded to a sparse raw temp file next to ``dst`` (zero 4 KiB blocks
    become holes), the logs of cleanly unmounted ext journals are zeroed in that copy
    (:mod:`orchestrator.qemu.ext4_journal`; ``src`` itself is never written), then the
    copy is converted as :func:`convert_to_vhdx` does and checked. The temp file is
    removed whatever happens; ``dst`` appears (renamed from a ``.part`` file) only
    when complete.
    """
    src_format = src_format or detect_format(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A plain name: e2fsprogs reads "?" in a file name as the start of options.
    raw = _temp_sibling(dst, suffix=".raw", prefix=".compact-")
    part = _temp_sibling(dst, suffix=".part")
    try:
        run_tool(
            ["qemu-img", "convert", "-f", src_format, "-O", "raw", "-S", "4k", str(src), str(raw)],
            what="expanding the disk to a sparse raw file for compaction",
            where=f"{src} -> {raw}",
            hint="check free space next to the destination (about the data in use); the VM must be off",
        )
        journals = tuple(zero_journals(raw))
        _convert_checked_vhdx(raw, "raw", part, dst)
        part.replace(dst)
    finally:
        raw.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    return Compaction(dst, journals)


def _convert_checked_vhdx(src: Path, src_format: str, tmp: Path, dst: Path) -> None:
    run_tool(
        ["qemu-img", "convert", "-f", src_format, "-O", "vhdx", "-o", VHDX_OPTIONS, str(src), str(tmp)],
        what="converting the disk to VHDX",
        where=f"{src} -> {dst}",
        hint="check free space in the destination; the VM using the disk must be off",
    )
    result = check(tmp, "vhdx")
    if not result.ok:
        raise QemuToolError("the new VHDX failed qemu-img check", where=str(dst), output=result.output)


def check(path: Path, fmt: str | None = None) -> CheckResult:
    """``qemu-img check``: exit 0 clean, 2/3 corruption or leaks (reported, not raised)."""
    fmt = fmt or detect_format(path)
    if fmt == "raw":
        # qemu-img has no consistency metadata to check for raw images.
        return CheckResult(ok=True, supported=False, output="raw: nothing to check")
    proc = _qemu_img_check(path, fmt)
    return CheckResult(ok=proc[0] == 0, supported=True, output=proc[1])


def _qemu_img_check(path: Path, fmt: str) -> tuple[int, str]:
    # Exit codes 2 (corruption) and 3 (leaks) are answers, not tool failures, so only
    # 1 (could not check) and others raise.
    proc = procs.run([require_tool("qemu-img"), "check", "-f", fmt, str(path)])
    output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode not in (0, 2, 3):
        raise QemuToolError(
            f"checking the disk: qemu-img exited {proc.returncode}",
            where=str(path),
            output=output,
            hint="is the file a disk of that format and readable?",
        )
    return (proc.returncode, output)


def _temp_sibling(dest: Path, *, suffix: str = ".tmp", prefix: str | None = None) -> Path:
    """A fresh temp name in ``dest``'s directory, so the final rename is atomic."""
    prefix = f".{dest.name}." if prefix is None else prefix
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)
