"""Realistic inputs for the GMI package tests: a real dynamic VHDX made by qemu-img, a
fake Hyper-V export folder, and the event log of a real local build (run through the
engine into a temporary SQLite database), with the facts and artifacts the QEMU and
Hyper-V pipelines record."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from events.model import ArtifactRecorded, FactRecorded
from events.store import SqliteEventStore
from orchestrator import builds
from orchestrator.gmi.hashing import sha256_file
from orchestrator.gmi.naming import DISK_ONLY, GmiNames
from orchestrator.gmi.operations import make_operations
from orchestrator.recorder import BuildRecorder
from orchestrator.targets.base import CommandResult

try:
    from support.cli import write_spec
except ImportError:  # pragma: no cover
    from tests.support.cli import write_spec

MIB = 1024 * 1024
NAMES = GmiNames("Debian", "12")
DISK_NAMES = GmiNames("Debian", "12", DISK_ONLY)  # what a build without Hyper-V packages

FACTS = {
    "os.pretty_name": "Debian GNU/Linux 12 (bookworm)",
    "os.id": "debian",
    "os.version_id": "12",
    "kernel.release": "6.1.0-26-cloud-amd64",
    "cloud_init.version": "22.4.2-1",
    "hyperv.daemons": "hv-kvp-daemon,hv-vss-daemon,hv-fcopy-daemon",
    "hyperv.daemons.source": "package",
    "hyperv.daemons.version": "6.1.112-1",
    "packages.count": "312",
    "users.default": "genie",
    "locale": "en_US.UTF-8",
    "guest.ssh_host_key_fingerprint": "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    "source.sha256": "5" * 64,
    "source.path": "/var/cache/gmi/debian-12-genericcloud-amd64.qcow2",
}


@pytest.fixture(scope="session")
def vhdx_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dynamic VHDX (qemu-img) of a small raw disk with data in two places."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (apt-get install qemu-utils)")
    folder = tmp_path_factory.mktemp("vhdx")
    raw = folder / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(8 * MIB)
        f.write(b"GMI-TEST-DISK" * 1000)
        f.seek(4 * MIB)
        f.write(os.urandom(MIB))
    out = folder / "master.vhdx"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", str(raw), str(out)],
        check=True,
    )
    return out


def make_export(folder: Path, disk: Path, *, vmcx: int = 1) -> Path:
    """An Export-VM folder: Virtual Machines/<GUID>.vmcx (+ .vmgs, .VMRS), the disk,
    and an empty Snapshots/. Export-VM names the folder after the VM: pass
    ``<somewhere>/GMI Debian 12``."""
    vm = folder / "Virtual Machines"
    vm.mkdir(parents=True)
    for i in range(vmcx):
        guid = f"5E1D8A1C-0B4F-4C39-9D5A-00000000000{i}"
        (vm / f"{guid}.vmcx").write_bytes(b"\x00\x01vmcx" + os.urandom(4096))
        (vm / f"{guid}.vmgs").write_bytes(os.urandom(2048))
        (vm / f"{guid}.VMRS").write_bytes(os.urandom(1024))
    (folder / "Virtual Hard Disks").mkdir()
    shutil.copyfile(disk, folder / "Virtual Hard Disks" / f"{NAMES.vm_name}.vhdx")
    (folder / "Snapshots").mkdir()
    return folder


@dataclass
class Build:
    db: Path
    build_id: str
    spec_dir: Path
    out: Path
    disk: Path
    export: Path | None

    def store(self) -> SqliteEventStore:
        return SqliteEventStore(self.db)

    def run_op(self, name: str, params: Mapping[str, object] | None = None) -> CommandResult:
        from orchestrator.builds import frozen_spec  # noqa: PLC0415

        store = self.store()
        try:
            spec, base = frozen_spec(builds.load_state(store, self.build_id))
            ops = make_operations(store, self.build_id, spec, base_dir=base)
            chunks: list[bytes] = []
            result = asyncio.run(ops[name](dict(params or {}), lambda _s, d: chunks.append(d)))
            if result.ok:  # as the engine does: record what the operation made
                BuildRecorder(store, self.build_id).record(
                    *(
                        ArtifactRecorded(name=a.name, path=a.path, sha256=a.sha256, size=a.size, kind=a.kind)
                        for a in result.artifacts
                    )
                )
            return result
        finally:
            store.close()


def local_build(tmp: Path, disk_master: Path, *, hyperv: bool, formats: tuple[str, ...] = ("zip",)) -> Build:
    """A real `gmi-fsm run` of a local-host spec (hooks run on this machine), then the
    facts and artifacts the lead's pipeline records (FactRecorded, ArtifactRecorded)."""
    spec_dir = tmp / "spec"
    spec_path = write_spec(
        spec_dir,
        [
            {"name": "say-hello", "stage": "update", "run": "echo updating; uname -r"},
            {"name": "zero", "stage": "cleanup", "run": "echo zero-fill done"},
        ],
        name="gmi-test",
        manifest={
            "maintainer": "Test Maintainer",
            "maintainer_email": "t@example.org",
            "source_url": "https://example.org/gmi",
        },
        output={"dir": "out", "formats": list(formats)},
    )
    db = tmp / "events.db"
    store = builds.open_store(db)
    try:
        bid = builds.request(store, builds.prepare(spec_path))
        result = asyncio.run(builds.run(store, bid))
        assert result is not None
        work = tmp / "work"
        work.mkdir()
        disk = work / f"{NAMES.vm_name}.vhdx"
        shutil.copyfile(disk_master, disk)
        export = make_export(work / "export" / NAMES.vm_name, disk) if hyperv else None
        recorder = BuildRecorder(store, bid)
        recorder.record(*(FactRecorded(key=k, value=v, source="compact/facts") for k, v in FACTS.items()))
        sha, size = sha256_file(disk)
        arts = [ArtifactRecorded(name="vhdx", path=str(disk), sha256=sha, size=size, kind="disk")]
        if export is not None:
            arts.append(
                ArtifactRecorded(name="export_dir", path=str(export), sha256="0" * 64, size=0, kind="dir")
            )
        recorder.record(*arts)
    finally:
        store.close()
    return Build(db, bid, spec_dir, spec_dir / "out", disk, export)


@pytest.fixture(scope="session")
def hyperv_build(tmp_path_factory: pytest.TempPathFactory, vhdx_master: Path) -> Build:
    """A documented and packaged Hyper-V GMI (zip and tar.gz). Tests must not modify it:
    copy what they tamper with."""
    b = local_build(tmp_path_factory.mktemp("hyperv"), vhdx_master, hyperv=True, formats=("zip", "tar.gz"))
    assert b.run_op("gmi.document").ok
    res = b.run_op("gmi.package")
    assert res.ok, res.error
    return b


@pytest.fixture(scope="session")
def disk_only_build(tmp_path_factory: pytest.TempPathFactory, vhdx_master: Path) -> Build:
    b = local_build(tmp_path_factory.mktemp("diskonly"), vhdx_master, hyperv=False)
    assert b.run_op("gmi.document").ok
    res = b.run_op("gmi.package")
    assert res.ok, res.error
    return b


def rezip(
    src: Path,
    dest: Path,
    *,
    replace: Mapping[str, bytes | None] | None = None,
    add: Mapping[str, bytes] | None = None,
    edit: Callable[[str, bytes], bytes] | None = None,
) -> Path:
    """A copy of zip ``src`` with members replaced (None drops them) or added."""
    replace = dict(replace or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            if info.filename in replace:
                data = replace.pop(info.filename)
                if data is None:
                    continue
            else:
                data = zin.read(info)
            if edit is not None:
                data = edit(info.filename, data)
            zout.writestr(info, data)
        for name, data in {**replace, **(add or {})}.items():
            if data is not None:
                zout.writestr(name, data)
    return dest


@pytest.fixture
def copy_of() -> Iterator[Callable[[Path, Path], Path]]:
    def _copy(src: Path, dest_dir: Path) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(src, dest_dir / src.name))

    yield _copy
