"""Files between the orchestrator machine and the Hyper-V host, in chunks through
the same executor (no SMB share needed: WinRM is the only port the host opens).

Both directions write to a ``.part`` file and move it in place only once its sha256
is right, and skip a file that is already there with the right digest: running a
transfer again after a crash costs at most the unfinished file.
"""

from __future__ import annotations

import base64
import hashlib
import ntpath
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.hyperv.executor import PowerShellExecutor
from orchestrator.hyperv.invoke import run_script
from orchestrator.targets.base import Artifact, OutputSink

CHUNK = 512 * 1024  # raw bytes per call: ~700 KB of base64, fragmented by PSRP
PART_SUFFIX = ".gmi-fsm-part"


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


@dataclass(frozen=True, slots=True)
class Uploaded:
    remote_path: str
    sha256: str
    size: int
    skipped: bool


async def upload(
    executor: PowerShellExecutor, local: Path, remote: str, *, timeout_s: float, sink: OutputSink
) -> Uploaded:
    digest, size = sha256_file(local)
    there = await run_script(
        executor, "file-hash", {"Path": remote, "ExpectSha256": digest}, timeout_s=timeout_s
    )
    if there.exit == 0:
        sink("stdout", f"{remote} already on the host with sha256 {digest}\n".encode())
        return Uploaded(remote, digest, size, skipped=True)
    part = remote + PART_SUFFIX
    offset = 0
    with local.open("rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block and offset > 0:
                break
            await run_script(
                executor,
                "file-write-chunk",
                {"Path": part, "Offset": offset, "DataBase64": base64.b64encode(block).decode()},
                timeout_s=timeout_s,
                record=False,
            )
            offset += len(block)
            if not block:
                break
    await run_script(
        executor, "file-commit", {"PartPath": part, "Path": remote, "Sha256": digest}, timeout_s=timeout_s
    )
    sink("stdout", f"uploaded {local} to {remote} ({size} bytes, sha256 {digest})\n".encode())
    return Uploaded(remote, digest, size, skipped=False)


async def download_tree(
    executor: PowerShellExecutor,
    remote_dir: str,
    local_dir: Path,
    *,
    timeout_s: float,
    sink: OutputSink,
    skip: frozenset[str] = frozenset(),
) -> list[Artifact]:
    """Copy every file under ``remote_dir`` to ``local_dir`` (but the relative paths in
    ``skip``); return them as artifacts."""
    listing = await run_script(executor, "file-list", {"Path": remote_dir}, timeout_s=timeout_s)
    artifacts = []
    for entry in listing.artifacts:
        rel = str(entry["path"])
        if rel.replace("\\", "/") in skip:
            continue
        parts = [p for p in rel.replace("\\", "/").split("/") if p]
        if any(p in {".", ".."} for p in parts):
            raise ValueError(f"refusing a remote file name that leaves the folder: {rel!r}")
        remote = ntpath.join(remote_dir, *parts)
        local = local_dir.joinpath(*parts)
        remote_hash = await run_script(
            executor, "file-hash", {"Path": remote, "ExpectSha256": ""}, timeout_s=timeout_s
        )
        digest, size = remote_hash.facts["sha256"], int(remote_hash.facts["size"])
        if not (local.is_file() and sha256_file(local) == (digest, size)):
            await _download(executor, remote, local, size, digest, timeout_s=timeout_s)
            sink("stdout", f"fetched {remote} ({size} bytes)\n".encode())
        artifacts.append(
            Artifact(
                name=rel.replace("\\", "/"), path=str(local), sha256=digest, size=size, kind="export-file"
            )
        )
    return artifacts


async def _download(
    executor: PowerShellExecutor, remote: str, local: Path, size: int, digest: str, *, timeout_s: float
) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + PART_SUFFIX)
    with part.open("wb") as fh:
        offset = 0
        while offset < size:
            got = await run_script(
                executor,
                "file-read-chunk",
                {"Path": remote, "Offset": offset, "Length": CHUNK},
                timeout_s=timeout_s,
                record=False,
            )
            block = base64.b64decode(got.facts["data"])
            if not block:
                break
            fh.write(block)
            offset += len(block)
    if sha256_file(part) != (digest, size):
        part.unlink()
        raise ValueError(f"{remote} arrived damaged (its sha256 differs from the host's)")
    os.replace(part, local)
