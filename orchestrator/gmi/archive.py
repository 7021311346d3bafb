"""Read a GMI package (``.zip``, ``.tar.gz`` or an unpacked folder) in one streamed
pass: every member's path is checked for safety and for what .NET's
``ZipFile.ExtractToDirectory`` does with it on NTFS (:mod:`orchestrator.gmi.zipnames`),
every zip member's compression method against what .NET reads, and every file is
hashed (the zip reader also checks each member's CRC-32 as it goes)."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from orchestrator.gmi import zipnames
from orchestrator.gmi.hashing import CHUNK

Kind = Literal["zip", "tar.gz", "folder"]
KEEP_SUFFIXES = (".yml", ".yaml", ".md", ".json", ".jsonl")
KEEP_LIMIT = 256 * 1024 * 1024  # root text files we keep the bytes of (manifest, log)
# What System.IO.Compression reads: stored, deflate, deflate64 (ZipArchiveEntry's
# compression-method check; docs/package.md). gmi-fsm writes only the first two.
DOTNET_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", 9: "deflate64"}


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    sha256: str


@dataclass(slots=True)
class Scan:
    path: Path
    kind: Kind
    files: dict[str, Member] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    texts: dict[str, bytes] = field(default_factory=dict)
    unsafe: list[str] = field(default_factory=list)
    windows: list[str] = field(default_factory=list)  # names NTFS/.NET would not extract as they are
    dotnet: list[str] = field(default_factory=list)  # members .NET cannot extract at all
    error: str = ""  # the archive could not be read to its end (truncated, corrupt)


def kind_of(path: Path) -> Kind | None:
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return None


def unsafe_reason(name: str) -> str:
    """Why an archive member's path could write outside the extraction folder (or
    is not portable), or "" when it is safe."""
    if not name:
        return "an empty name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "a '..' component (path traversal)"
    if "\x00" in name:
        return "a NUL byte"
    return ""


def _take(scan: Scan, name: str, stream: IO[bytes], size_hint: int) -> None:
    keep = "/" not in name and name.lower().endswith(KEEP_SUFFIXES) and size_hint <= KEEP_LIMIT
    h = hashlib.sha256()
    size = 0
    kept: list[bytes] = []
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        if keep:
            kept.append(chunk)
    scan.files[name] = Member(name, size, h.hexdigest())
    if keep:
        scan.texts[name] = b"".join(kept)
    for parent in PurePosixPath(name).parents:
        if str(parent) != ".":
            scan.dirs.add(str(parent))


def _member_name(scan: Scan, raw: str) -> str | None:
    reason = unsafe_reason(raw)
    if reason:
        scan.unsafe.append(f"{raw!r}: {reason}")
        return None
    return raw.replace("\\", "/").rstrip("/")


def scan(path: Path) -> Scan:
    kind = kind_of(path)
    if kind is None:
        msg = f"{path} is not a .zip, a .tar.gz or a folder"
        raise ValueError(msg)
    result = Scan(path, kind)
    raw_names: list[str] = []
    if kind == "zip":
        _scan_zip(result, raw_names)
    elif kind == "tar.gz":
        _scan_tar(result, raw_names)
    else:
        _scan_folder(result, raw_names)
    result.windows = zipnames.problems([n for n in raw_names if not unsafe_reason(n)])
    return result


def _scan_zip(result: Scan, raw_names: list[str]) -> None:
    try:
        zf = zipfile.ZipFile(result.path)
    except zipfile.BadZipFile as exc:
        result.error = (
            f"not a readable zip ({exc}): the end-of-central-directory record is missing, so the "
            "file is truncated (an interrupted copy or download) or not a zip at all"
        )
        return
    except OSError as exc:
        result.error = f"cannot open: {exc}"
        return
    with zf:
        for info in zf.infolist():
            raw_names.append(info.filename)
            _dotnet_readable(result, info)
            name = _member_name(result, info.filename)
            if name is None:
                continue
            if info.is_dir():
                result.dirs.add(name)
                continue
            if name in result.files:
                continue  # a duplicate: reported by zipnames; the first copy is what .NET extracts
            try:
                with zf.open(info) as stream:
                    _take(result, name, stream, info.file_size)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                result.error = (
                    f"member {info.filename!r} cannot be read to its end: {exc} (corrupt or truncated)"
                )
                return


def _dotnet_readable(result: Scan, info: zipfile.ZipInfo) -> None:
    name = info.filename
    if info.compress_type not in DOTNET_METHODS:
        result.dotnet.append(
            f"{name!r}: compression method {info.compress_type} (.NET reads only stored, deflate and "
            "deflate64)"
        )
    if info.flag_bits & 0x1:
        result.dotnet.append(f"{name!r}: encrypted (.NET cannot extract encrypted entries)")
    if info.is_dir() and info.file_size:
        result.dotnet.append(f"{name!r}: a folder entry with {info.file_size} bytes of data (.NET throws)")


def _scan_tar(result: Scan, raw_names: list[str]) -> None:
    try:
        with tarfile.open(result.path, "r|gz") as tf:
            for info in tf:
                raw_names.append(info.name + ("/" if info.isdir() else ""))
                name = _member_name(result, info.name)
                if name is None:
                    continue
                if info.isdir():
                    result.dirs.add(name)
                elif info.isfile():
                    stream = tf.extractfile(info)
                    if stream is not None:
                        _take(result, name, stream, info.size)
                else:
                    result.unsafe.append(f"{info.name!r}: a link or special file")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        result.error = f"not a readable tar.gz ({exc or type(exc).__name__}): truncated or corrupt"


def _scan_folder(result: Scan, raw_names: list[str]) -> None:
    root = result.path
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        raw_names.append(name + ("/" if p.is_dir() and not p.is_symlink() else ""))
        if p.is_symlink():
            result.unsafe.append(f"{name!r}: a symbolic link")
        elif p.is_dir():
            result.dirs.add(name)
        elif p.is_file():
            with p.open("rb") as f:
                _take(result, name, f, p.stat().st_size)
