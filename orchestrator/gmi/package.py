"""Package a GMI: ``GMI-<Os>-<Ver>.zip`` laid out as vmgenie imports it, or the
disk-only ``disk-only-GMI-<Os>-<Ver>.zip`` (a ``.tar.gz`` of either on request), then the
provenance statement and ``SHA256SUMS``.

The zip is what .NET's ``ZipFile.ExtractToDirectory`` extracts: stored or deflate
members only, ZIP64 where a member needs it, and no member name NTFS would refuse,
fold onto another, or rename (checked before the first byte is written). Everything is
streamed in 1 MiB chunks: a 20 GB VHDX is never held in memory. Each file is written
under a temporary name and renamed when complete, and the previous run's
``SHA256SUMS`` is removed first and written last: a package is complete exactly when
``SHA256SUMS`` exists and verifies (docs/package.md).
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, Literal

from orchestrator.gmi import zipnames
from orchestrator.gmi.archive import unsafe_reason
from orchestrator.gmi.atomic import atomic_path, write_text_atomic
from orchestrator.gmi.hashing import CHUNK, sha256_file, sha256sums_line
from orchestrator.gmi.manifest import TIMESTAMP_FORMAT, Manifest
from orchestrator.gmi.naming import (
    DISK_DIR,
    DISK_ONLY,
    HYPERV_EXPORT,
    METADATA,
    SNAPSHOT_DIR,
    SUMS,
    VM_DIR,
    GmiNames,
    Variant,
)

DiskCompression = Literal["stored", "deflated"]

# A dynamic VHDX stores only allocated blocks, and the build zero-filled and compacted
# the free space away, so what is left is mostly real data. Deflate would save perhaps
# a third of it at ~50 MB/s on one core (minutes for 20 GB, on every build and every
# import); STORED copies at disk speed and is what Export-VM folders zipped by hand
# usually use. Text files are small and deflate well.
DEFAULT_DISK_COMPRESSION: DiskCompression = "stored"
DEFAULT_DEFLATE_LEVEL = 6  # zlib's default; 1 is several times faster on a deflated disk


class PackageError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member: a file copied from ``source``, or a folder (source None)."""

    arcname: str
    source: Path | None = None

    @property
    def is_dir(self) -> bool:
        return self.source is None


@dataclass(frozen=True, slots=True)
class WrittenArchive:
    path: Path
    sha256: str
    size: int
    members: dict[str, str] = field(default_factory=dict)  # arcname -> sha256


def plan_entries(
    names: GmiNames, disk: Path, export_dir: Path | None, root_files: Iterable[tuple[str, Path]]
) -> list[Entry]:
    """The members, in archive order: small root files, the VM configuration (a
    Hyper-V export only), then the disk last (so a reader sees the manifest without
    seeking past 20 GB)."""
    if (export_dir is None) != names.is_disk_only:
        raise PackageError(
            f"{names.zip} is a {names.variant} package but "
            + ("an export folder was given" if export_dir is not None else "there is no Export-VM folder"),
            hint="a package with a VM configuration is GMI-<os>-<ver>.zip; one without is disk-only",
        )
    entries = [Entry(arc, src) for arc, src in root_files]
    if export_dir is not None:
        entries.extend(_export_entries(names, export_dir))
    if not disk.is_file():
        raise PackageError(f"the VHDX {disk} does not exist", hint="the compact stage records it as `vhdx`")
    entries += [Entry(f"{DISK_DIR}/"), Entry(names.disk_entry, disk)]
    return entries


def _export_entries(names: GmiNames, export_dir: Path) -> list[Entry]:
    """Flatten an Export-VM folder to the archive root, refusing what vmgenie's
    import would refuse (zero or several .vmcx, differencing disks)."""
    if not (export_dir / VM_DIR).is_dir():
        raise PackageError(
            f"{export_dir} has no '{VM_DIR}' folder: it is not an Export-VM folder",
            hint="the export artifact must point at the folder Export-VM created for the VM",
        )
    unexpected = sorted(
        p.name for p in export_dir.iterdir() if p.name not in (VM_DIR, DISK_DIR, SNAPSHOT_DIR)
    )
    if unexpected:
        raise PackageError(f"unexpected items in the export folder {export_dir}: {', '.join(unexpected)}")
    avhdx = sorted(
        str(p.relative_to(export_dir)) for p in export_dir.rglob("*") if p.suffix.lower() == ".avhdx"
    )
    if avhdx:
        raise PackageError(
            f"the export holds differencing disks: {', '.join(avhdx)}",
            hint="merge checkpoints into the parent VHDX (the compact stage) and export again",
        )
    vm_dir = export_dir / VM_DIR
    vmcx = sorted(p for p in vm_dir.iterdir() if p.is_file() and p.suffix.lower() == ".vmcx")
    nested = sorted(
        str(p.relative_to(export_dir))
        for p in vm_dir.rglob("*")
        if p.suffix.lower() == ".vmcx" and p.parent != vm_dir
    )
    if len(vmcx) != 1 or nested:
        raise PackageError(
            f"'{VM_DIR}' must hold exactly one .vmcx, directly inside it; found {len(vmcx)}"
            + (f": {', '.join(p.name for p in vmcx)}" if vmcx else "")
            + (f", and nested: {', '.join(nested)}" if nested else ""),
            hint="vmgenie imports the one .vmcx it finds directly in 'Virtual Machines' (not in "
            "subfolders); delete stale VM configurations and export again",
        )
    if export_dir.name != names.vm_name:
        raise PackageError(
            f"the export folder is {export_dir.name!r}, not {names.vm_name!r}: Export-VM names it after "
            "the VM, so the VM inside is not the one vmgenie's import will look for",
            hint=f"name the build VM exactly {names.vm_name!r} (vmgenie finds it by that name after "
            "Import-VM) and export again",
        )
    disks_dir = export_dir / DISK_DIR
    if disks_dir.is_dir():
        others = sorted(p.name for p in disks_dir.iterdir() if p.name != f"{names.vm_name}.vhdx")
        if others:
            raise PackageError(
                f"'{DISK_DIR}' in the export holds {', '.join(others)}; "
                f"only '{names.vm_name}.vhdx' may be there",
                hint="the VM must have one disk named like the VM (the VM configuration refers to it)",
            )
    out: list[Entry] = []
    for folder in (VM_DIR, SNAPSHOT_DIR):
        out.append(Entry(f"{folder}/"))
        base = export_dir / folder
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                arc = p.relative_to(export_dir).as_posix()
                if p.is_symlink():
                    raise PackageError(f"the export holds a symbolic link: {arc}")
                out.append(Entry(f"{arc}/") if p.is_dir() else Entry(arc, p))
    return out


def _copy(src: Path, out: IO[bytes]) -> str:
    h = hashlib.sha256()
    with src.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _zip_time(timestamp: str) -> tuple[int, int, int, int, int, int]:
    t = datetime.strptime(timestamp, TIMESTAMP_FORMAT)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)


def check_member_names(entries: Iterable[Entry]) -> None:
    """Refuse, before anything is written, member names that .NET would not extract
    as themselves on NTFS (or that leave the folder)."""
    names = [e.arcname for e in entries]
    bad = [f"{n!r}: {r}" for n in names if (r := unsafe_reason(n))] + zipnames.problems(names)
    if bad:
        raise PackageError(
            "member names vmgenie's extraction (.NET ZipFile.ExtractToDirectory on NTFS) would refuse, "
            "rename or fold onto another: " + "; ".join(bad[:10]) + (" …" if len(bad) > 10 else ""),
            hint='rename the files (the OS name and version make the file names: avoid <>:"|?*, '
            "trailing dots/spaces and names differing only in case)",
        )


def _set_level(info: zipfile.ZipInfo, level: int) -> None:
    if sys.version_info >= (3, 13):
        info.compress_level = level
    else:
        info._compresslevel = level  # type: ignore[attr-defined]  # the 3.11/3.12 spelling


def write_zip(
    dest: Path,
    entries: list[Entry],
    *,
    timestamp: str,
    disk_compression: DiskCompression = DEFAULT_DISK_COMPRESSION,
    deflate_level: int = DEFAULT_DEFLATE_LEVEL,
) -> WrittenArchive:
    """Write the zip (stored or deflate members only; ZIP64 allowed; entry times from
    ``timestamp`` so the same inputs give the same bytes) and hash each member while
    copying it."""
    check_member_names(entries)
    date_time = _zip_time(timestamp)
    members: dict[str, str] = {}
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for e in entries:
                info = zipfile.ZipInfo(e.arcname, date_time)
                if e.source is None:
                    info.external_attr = (0o40755 << 16) | 0x10  # a folder, for unix and Windows
                    zf.writestr(info, b"")
                    continue
                size = e.source.stat().st_size
                info.file_size = size
                info.external_attr = 0o100644 << 16
                is_disk = e.arcname.lower().endswith(".vhdx")
                stored = is_disk and disk_compression == "stored"
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                if not stored:
                    _set_level(info, deflate_level)
                # Decide ZIP64 from the real size up front: the local header cannot
                # grow after the data is written. (zipfile also turns it on by itself
                # from about 2 GiB, its own safety margin.)
                with zf.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as out:
                    members[e.arcname] = _copy(e.source, out)
        digest, size = sha256_file(tmp)
    return WrittenArchive(dest, digest, size, members)


def write_tar(dest: Path, entries: list[Entry], *, timestamp: str) -> WrittenArchive:
    """The same layout as a gzip-compressed tar (POSIX pax format: no size limit)."""
    check_member_names(entries)
    mtime = datetime.strptime(timestamp + "+0000", TIMESTAMP_FORMAT + "%z").timestamp()
    members: dict[str, str] = {}
    with atomic_path(dest) as tmp:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tf:
            for e in entries:
                info = tarfile.TarInfo(e.arcname.rstrip("/"))
                info.mtime = int(mtime)
                if e.source is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
                    continue
                info.size, info.mode = e.source.stat().st_size, 0o644
                with e.source.open("rb") as f:
                    reader = _HashingReader(f)
                    tf.addfile(info, reader)  # type: ignore[arg-type,unused-ignore]  # it only calls .read(n)
                members[e.arcname] = reader.hexdigest()
        digest, size = sha256_file(tmp)
    return WrittenArchive(dest, digest, size, members)


class _HashingReader:
    """A read-only file wrapper that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        return data

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def write_sums(out_dir: Path, files: Iterable[Path]) -> Path:
    """``SHA256SUMS`` for ``files`` (all in ``out_dir``), in ``sha256sum -b`` format."""
    lines = [sha256sums_line(sha256_file(p)[0], p.name) for p in sorted(set(files))]
    dest = out_dir / SUMS
    write_text_atomic(dest, "".join(lines))
    return dest


def variant_for(export_dir: Path | None) -> Variant:
    return HYPERV_EXPORT if export_dir is not None else DISK_ONLY


def root_files(names: GmiNames, out_dir: Path) -> list[tuple[str, Path]]:
    """The small files at the archive root, all written beforehand into ``out_dir``:
    manifest and readme (vmgenie's), the sidecar ``gmi-metadata.yml``, and the event
    log (inside too, so the zip alone proves the sidecar's event-log head)."""
    return [
        (names.manifest, out_dir / names.manifest),
        (names.readme, out_dir / names.readme),
        (METADATA, out_dir / METADATA),
        (names.events, out_dir / names.events),
    ]


def check_disk(manifest: Manifest, archive: WrittenArchive, names: GmiNames) -> None:
    got = archive.members.get(names.disk_entry)
    if got != manifest.disk_sha256:
        archive.path.unlink(missing_ok=True)
        raise PackageError(
            f"the VHDX changed after the manifest was written: its sha256 is {got}, the manifest "
            f"says {manifest.checksum_sha256}; removed {archive.path.name}",
            hint="run the document stage again (it rehashes the disk), then package",
        )
