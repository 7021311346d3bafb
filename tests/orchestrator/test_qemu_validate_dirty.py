"""A GMI left dirty on purpose fails the validate stage, naming what was left.

The disk is the lab base with the build VM's machine-id planted back into it (what a
seal that forgot to clear it leaves): the throwaway copy boots with that same id, and
the validate stage's check fails with the evidence. (Host keys left behind are caught
offline by `validate --inspect`: cloud-init regenerates them on a clone's first boot.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from events.model import FactRecorded
from orchestrator import builds
from orchestrator.hosts.qemu import QemuHost
from orchestrator.qemu.accel import choose_accel
from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key
from orchestrator.recorder import BuildRecorder
from orchestrator.targets.base import Stream
from orchestrator.view import BuildView

pytestmark = pytest.mark.vm

BUILD_MACHINE_ID = "0123456789abcdef0123456789abcdef"


def guestfish_env() -> dict[str, str]:
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    if choose_accel().kind != "kvm":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


@pytest.mark.timeout(1200)
@pytest.mark.skipif(shutil.which("guestfish") is None, reason="libguestfs-tools is not installed")
def test_a_clone_with_the_build_machine_id_fails_validation(tmp_path: Path) -> None:
    key, public = lab_ssh_key()
    base = cached_debian_base(user="gmi", authorized_key=public)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "dirty",
        "os": {"name": "Debian", "version": "12", "family": "apt"},
        "host": {"kind": "qemu", "memory_mib": 1536, "boot_timeout_s": 300},
        "source": {"base_image": str(base.disk)},
        "guest": {"user": "gmi", "ssh_private_key": f"file:{key}"},
        "output": {"dir": str(tmp_path / "out")},
    }))
    store = builds.open_store(tmp_path / "events.db")
    build_id = builds.request(store, builds.prepare(spec_path))
    recorder = BuildRecorder(store, build_id)
    recorder.record(FactRecorded(key="guest.machine_id", value=BUILD_MACHINE_ID, source="test"))
    spec, base_dir = builds.frozen_spec(recorder.state)
    host = QemuHost(spec, base_dir, BuildView(recorder))

    # The "exported" GMI: the base disk with the build's machine-id left in it.
    disks = host.export_dir / "Virtual Hard Disks"
    disks.mkdir(parents=True)
    dirty = tmp_path / "dirty.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(base.disk), str(dirty)], check=True)
    subprocess.run(
        ["guestfish", "--rw", "-a", str(dirty), "-i", "write", "/etc/machine-id", BUILD_MACHINE_ID + "\n"],
        check=True, env=guestfish_env(), timeout=600,
    )
    vhdx = disks / f"{spec.vm_name}.vhdx"
    subprocess.run(["qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic", str(dirty), str(vhdx)],
                   check=True)

    out: list[str] = []

    def sink(_stream: Stream, data: bytes) -> None:
        out.append(data.decode())

    result = asyncio.run(host._validate_boot({}, sink))
    assert result.exit_code == 1
    assert "boot.machine_id" in result.error
    assert BUILD_MACHINE_ID in result.error  # the evidence names what was left
    assert result.facts["validate.boot.machine_id"].startswith("fail")
    assert result.facts["validate.boot.login"].startswith("pass")
    # The base image still holds the build user's key: the attacker's check names it.
    assert "boot.sealed.build-access" in result.error and "logs in as gmi" in result.error
