"""Files between this machine and the Hyper-V host: the one place for transfers.

- :func:`upload_file`: a local file to a host path (ISO, seed media, a VHDX).
- :func:`download_folder`: every file of a host folder to a local folder (an export).

Any host operation may call them; they take the executor and a :class:`TransferOptions`
(:func:`transfer_options` makes one from the spec). The bytes travel over SMB 3 when the
spec names a share, else over PowerShell Remoting (:mod:`orchestrator.hyperv.channels`).
Either way:

- **Verified, then named.** Bytes go to a part file (``<name>.gmi-fsm-part``), which takes
  its name only once the sha256 of the whole file is the source's: on the host the
  ``file-commit`` script hashes it and renames it; here the download is hashed as it
  arrives and renamed after. A file already there with the source's sha256 is skipped.
- **Resumable.** After every chunk (``host.transfer_chunk_mib``, 64 MiB by default) the
  offset up to which the host confirmed the bytes is recorded in the event log, through
  the attempt's journal (``StepProgress``: ``file``, ``offset``, and when a file starts,
  ``sha256``, ``size``, ``channel``, ``started_at``). A later attempt of the step (a retry,
  or ``gmi-fsm run --resume`` after a crash) reads the last one and continues there, once
  the partial file's first ``offset`` bytes hash as the source's do: for an upload the
  host hashes its part file (``file-digest``), for a download this machine hashes its own
  and the host the source's prefix. Otherwise it starts the file again. A transfer killed
  mid-chunk therefore sends again at most what followed its last checkpoint: less than
  one chunk, and never more than two.
"""

from __future__ import annotations

import asyncio
import hashlib
import ntpath
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from orchestrator.hyperv.buffers import keep_big_buffers
from orchestrator.hyperv.channels import Channel, open_channel
from orchestrator.hyperv.executor import PowerShellExecutor
from orchestrator.hyperv.invoke import ScriptOutcome, run_script
from orchestrator.hyperv.smb import SmbLogin
from orchestrator.stepcontext import current_attempt
from orchestrator.targets.base import Artifact, OutputSink, TargetError

if TYPE_CHECKING:
    from orchestrator.spec import HyperVHostSpec

PART_SUFFIX = ".gmi-fsm-part"
DEFAULT_CHUNK_BYTES = 64 << 20
HASH_BYTES_PER_S = 20 << 20
"""The slowest disk a host's sha256 of a whole file is given time for (a 20 GB file: 1000 s)."""


@dataclass(frozen=True, slots=True)
class TransferOptions:
    call_timeout_s: float
    """Each script call (a data call, a hash of a small file)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    """The checkpoint unit: the verified offset is recorded after every chunk."""
    smb: SmbLogin | None = None
    """The share to transfer through; None: PowerShell Remoting."""


def transfer_options(spec: HyperVHostSpec, base_dir: Path) -> TransferOptions:
    """The options a spec's host asks for (its password resolved when a share is used)."""
    smb = None
    if spec.smb_share:
        password = None
        if spec.password:
            from orchestrator.secrets import resolve  # noqa: PLC0415

            password = resolve(spec.password, where="host.password", base_dir=base_dir).reveal()
        smb = SmbLogin(
            server=spec.host,
            share=spec.smb_share,
            port=spec.smb_port,
            username=spec.username,
            password=password,
            auth="kerberos" if spec.auth == "kerberos" else "ntlm" if spec.auth == "ntlm" else "negotiate",
            encrypt=spec.smb_encrypt,
        )
    return TransferOptions(
        call_timeout_s=spec.call_timeout_s, chunk_bytes=spec.transfer_chunk_mib << 20, smb=smb
    )


@dataclass(frozen=True, slots=True)
class Uploaded:
    remote_path: str
    sha256: str
    size: int
    skipped: bool
    channel: str = ""
    resumed_from: int = 0
    """Where this attempt started (0: from the beginning)."""
    sent: int = 0
    """Bytes this attempt sent."""
    hash_s: float = 0.0
    """Seconds for the local file's digest and the host's check for the file."""
    send_s: float = 0.0
    """Seconds from opening the channel (the SMB login) to the host confirming the last byte."""
    commit_s: float = 0.0
    """Seconds for the host to hash the whole part file and give it its name."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """One file :func:`download_folder` brought here."""

    name: str
    """Its path relative to the folder, with ``/``."""
    path: Path
    sha256: str
    size: int
    skipped: bool
    """It was here already with the host's sha256."""
    channel: str = ""
    resumed_from: int = 0
    hash_s: float = 0.0
    """Seconds for the host's digest of the source."""
    send_s: float = 0.0
    """Seconds from opening the file on the host to the last byte here (hashed as it came)."""

    def artifact(self, kind: str = "export-file") -> Artifact:
        return Artifact(name=self.name, path=str(self.path), sha256=self.sha256, size=self.size, kind=kind)


def sha256_file(path: Path, prefix_length: int = 0) -> tuple[str, int, str]:
    """(sha256, size, sha256 of the first ``prefix_length`` bytes) of a local file, read once."""
    whole, prefix, size = hashlib.sha256(), hashlib.sha256(), 0
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            whole.update(block)
            take = max(0, min(len(block), prefix_length - size))
            if take:
                prefix.update(block[:take])
            size += len(block)
    return whole.hexdigest(), size, prefix.hexdigest()


def _hash_timeout(options: TransferOptions, size: int) -> float:
    return max(options.call_timeout_s, size / HASH_BYTES_PER_S)


def _checkpoint(values: Mapping[str, object]) -> None:
    attempt = current_attempt()
    if attempt is not None:
        attempt.journal.progress({k: str(v) for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class _LastCheckpoint:
    """What the step's last checkpoint says about one file (offset 0: nothing)."""

    offset: int = 0
    sha256: str = ""
    size: int = -1

    def applies(self, sha256: str, size: int) -> int:
        """The offset to resume at for a source with this digest and size, or 0 (the
        whole size: every byte arrived, only the check and the rename are left)."""
        ok = (self.sha256, self.size) == (sha256, size) and 0 < self.offset <= size
        return self.offset if ok else 0


def _last_checkpoint(file: str, direction: str) -> _LastCheckpoint:
    attempt = current_attempt()
    last = attempt.resume_from if attempt is not None else {}
    if (last.get("file"), last.get("direction")) != (file, direction):
        return _LastCheckpoint()
    try:
        return _LastCheckpoint(int(last["offset"]), last["sha256"], int(last["size"]))
    except (KeyError, ValueError):
        return _LastCheckpoint()


async def _digest(
    executor: PowerShellExecutor, path: str, prefix: int, options: TransferOptions, size_hint: int
) -> ScriptOutcome:
    return await run_script(
        executor,
        "file-digest",
        {"Path": path, "PrefixLength": prefix},
        timeout_s=_hash_timeout(options, max(size_hint, prefix)),
    )


# -- upload --------------------------------------------------------------------------------------


async def upload_file(
    executor: PowerShellExecutor,
    local: Path,
    remote: str,
    *,
    options: TransferOptions,
    sink: OutputSink,
) -> Uploaded:
    """Put the local file ``local`` at the host path ``remote`` (its folder is made when
    missing), verified by sha256; resume an earlier attempt's partial copy."""
    keep_big_buffers()
    t0 = time.monotonic()
    last = _last_checkpoint(remote, "upload")
    # The local digest, and the prefix the last checkpoint names, in one read.
    sha, size, prefix_sha = await asyncio.to_thread(sha256_file, local, last.offset)
    candidate = last.applies(sha, size)
    there = await _digest(executor, remote, 0, options, size)
    if there.exit == 0 and (there.facts.get("sha256"), there.facts.get("size")) == (sha, str(size)):
        sink("stdout", f"{remote} already on the host with sha256 {sha}\n".encode())
        return Uploaded(remote, sha, size, skipped=True, hash_s=round(time.monotonic() - t0, 3))
    t_send = time.monotonic()
    channel = await open_channel(executor, options.smb, call_timeout_s=options.call_timeout_s)
    try:
        channel.check_path(remote)
        part = remote + PART_SUFFIX
        start = 0
        if candidate:
            start = await _verified_remote_prefix(executor, part, candidate, prefix_sha, options, sink)
        _checkpoint(
            {
                "direction": "upload",
                "file": remote,
                "sha256": sha,
                "size": size,
                "channel": channel.name,
                "started_at": start,
                "offset": start,
            }
        )
        with local.open("rb") as src:
            await _send(channel, src, part, remote, start, size, options.chunk_bytes)
        t_commit = time.monotonic()
        await run_script(
            executor,
            "file-commit",
            {"PartPath": part, "Path": remote, "Sha256": sha},
            timeout_s=_hash_timeout(options, size),
        )
    finally:
        await channel.close()
    done = time.monotonic()
    how = f"over {channel.name.upper()}" + (f", resumed at byte {start}" if start else "")
    sink("stdout", f"uploaded {local} to {remote} ({size} bytes, sha256 {sha}, {how})\n".encode())
    return Uploaded(
        remote,
        sha,
        size,
        skipped=False,
        channel=channel.name,
        resumed_from=start,
        sent=size - start,
        hash_s=round(t_send - t0, 3),
        send_s=round(t_commit - t_send, 3),
        commit_s=round(done - t_commit, 3),
    )


async def _verified_remote_prefix(
    executor: PowerShellExecutor,
    part: str,
    offset: int,
    local_prefix: str,
    options: TransferOptions,
    sink: OutputSink,
) -> int:
    """``offset`` when the host's part file starts with the local file's first ``offset``
    bytes (the host hashes them), else 0."""
    got = await _digest(executor, part, offset, options, offset)
    facts = got.facts
    matches = (facts.get("prefix_length"), facts.get("prefix_sha256")) == (str(offset), local_prefix)
    if got.exit == 0 and matches:
        sink("stdout", f"resuming {part} at byte {offset}: the host's first {offset} bytes match\n".encode())
        return offset
    why = (
        "it is not on the host"
        if got.exit != 0
        else f"its first {facts.get('prefix_length')} bytes hash {facts.get('prefix_sha256')}, "
        f"not {local_prefix}"
    )
    sink("stdout", f"starting {part} again: {why}\n".encode())
    return 0


class _Checkpoints:
    """Records the confirmed offset once it is a chunk past the last record, and at the
    end. Called in order, from the channel's thread. With no more than a chunk ever in
    flight (the channel's window), a transfer stopped at any moment holds less than two
    chunks past its last record."""

    def __init__(self, file: str, start: int, size: int, chunk: int) -> None:
        self.file = file
        self.size = size
        self.chunk = chunk
        self.due = start + chunk

    def __call__(self, offset: int) -> None:
        if offset >= self.due or offset >= self.size:
            _checkpoint({"file": self.file, "offset": offset})
            self.due = offset + self.chunk


async def _send(
    channel: Channel, src: BinaryIO, part: str, remote: str, start: int, size: int, chunk: int
) -> None:
    writer = await channel.open_writer(part, start, window=chunk)
    try:
        await writer.put(src, start, size - start, _Checkpoints(remote, start, size, chunk))
    finally:
        await writer.close()


# -- download ------------------------------------------------------------------------------------


async def download_folder(
    executor: PowerShellExecutor,
    remote_dir: str,
    local_dir: Path,
    *,
    options: TransferOptions,
    sink: OutputSink,
    skip: frozenset[str] = frozenset(),
) -> list[Fetched]:
    """Copy every file under the host folder ``remote_dir`` to ``local_dir`` (but the
    relative paths in ``skip``), each verified by sha256; resume an earlier attempt's
    partial copy."""
    keep_big_buffers()
    listing = await run_script(executor, "file-list", {"Path": remote_dir}, timeout_s=options.call_timeout_s)
    entries = []
    for entry in listing.artifacts:
        rel = str(entry["path"]).replace("\\", "/")
        if rel in skip:
            continue
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in {".", ".."} for p in parts):
            raise TargetError(f"refusing a remote file name that leaves the folder: {rel!r}")
        listed = int(str(entry.get("size", "0")) or 0)
        entries.append((rel, ntpath.join(remote_dir, *parts), local_dir.joinpath(*parts), listed))
    channel: Channel | None = None
    fetched = []
    try:
        for rel, remote, local, listed in entries:
            if channel is None:
                channel = await open_channel(executor, options.smb, call_timeout_s=options.call_timeout_s)
            fetched.append(await _download(executor, channel, rel, remote, local, listed, options, sink))
    finally:
        if channel is not None:
            await channel.close()
    return fetched


async def _download(
    executor: PowerShellExecutor,
    channel: Channel,
    rel: str,
    remote: str,
    local: Path,
    listed_size: int,
    options: TransferOptions,
    sink: OutputSink,
) -> Fetched:
    t0 = time.monotonic()
    last = _last_checkpoint(remote, "download")
    # The source's digest and, in the same pass on the host, the prefix the last checkpoint names.
    src = await _digest(executor, remote, last.offset, options, listed_size)
    if src.exit != 0:
        raise TargetError(f"{remote} is no longer on the host: {src.message}", retryable=True)
    sha, size = src.facts["sha256"], int(src.facts["size"])
    if local.is_file() and (await asyncio.to_thread(sha256_file, local))[:2] == (sha, size):
        return Fetched(rel, local, sha, size, skipped=True, hash_s=round(time.monotonic() - t0, 3))
    t_send = time.monotonic()
    channel.check_path(remote)
    part = local.with_name(local.name + PART_SUFFIX)
    start, hasher = 0, hashlib.sha256()
    candidate = last.applies(sha, size)
    if candidate:
        start, hasher = await asyncio.to_thread(
            _verified_local_prefix, part, candidate, src.facts.get("prefix_sha256", "")
        )
        sink(
            "stdout",
            (
                f"resuming {local} at byte {start}: its first {start} bytes match the host's\n"
                if start
                else f"starting {local} again: its first {candidate} bytes differ from the host's\n"
            ).encode(),
        )
    _checkpoint(
        {
            "direction": "download",
            "file": remote,
            "sha256": sha,
            "size": size,
            "channel": channel.name,
            "started_at": start,
            "offset": start,
        }
    )
    local.parent.mkdir(parents=True, exist_ok=True)
    reader = await channel.open_reader(remote, window=options.chunk_bytes)
    try:
        # Unbuffered: what a checkpoint counts is in the file, not in a buffer of this process.
        with part.open("r+b" if start else "wb", buffering=0) as out:
            out.truncate(start)
            out.seek(start)

            def take(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    view = view[out.write(view) or 0 :]
                hasher.update(data)

            marks = _Checkpoints(remote, start, size, options.chunk_bytes)
            await reader.get(start, size - start, take, marks)
    finally:
        await reader.close()
    if hasher.hexdigest() != sha:
        part.unlink()
        raise TargetError(
            f"{remote} arrived damaged (its sha256 differs from the host's); the partial copy was removed",
            hint="resume: the file is fetched again",
            retryable=True,
        )
    os.replace(part, local)
    how = f"over {channel.name.upper()}" + (f", resumed at byte {start}" if start else "")
    sink("stdout", f"fetched {remote} ({size} bytes, sha256 {sha}, {how})\n".encode())
    return Fetched(
        rel,
        local,
        sha,
        size,
        skipped=False,
        channel=channel.name,
        resumed_from=start,
        hash_s=round(t_send - t0, 3),
        send_s=round(time.monotonic() - t_send, 3),
    )


def _verified_local_prefix(part: Path, offset: int, remote_prefix: str) -> tuple[int, hashlib._Hash]:
    """(offset, the sha256 state after it) when the local part file starts with the host
    file's first ``offset`` bytes, else (0, a fresh sha256)."""
    hasher = hashlib.sha256()
    if not part.is_file() or part.stat().st_size < offset:
        return 0, hashlib.sha256()
    left = offset
    with part.open("rb") as fh:
        while left > 0:
            block = fh.read(min(4 << 20, left))
            if not block:
                return 0, hashlib.sha256()
            hasher.update(block)
            left -= len(block)
    if hasher.copy().hexdigest() != remote_prefix:
        return 0, hashlib.sha256()
    return offset, hasher
