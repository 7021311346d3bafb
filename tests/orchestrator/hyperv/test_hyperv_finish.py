"""Finishing a disk-only GMI on Hyper-V, through the SIMULATOR (no VM): `gmi-fsm run` of a
spec whose source is a real disk-only package (a real dynamic VHDX made by qemu-img,
documented and packaged by gmi-fsm's own package stages) makes a full GMI that `gmi-fsm
validate` accepts as importable and whose sidecar and provenance name the parent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from orchestrator import builds
from orchestrator.exit_codes import ExitCode
from orchestrator.hyperv.simulator import HyperVSimulator
from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key
from orchestrator.qemu.vm import DiskSpec, QemuVm, VmConfig, free_tcp_port
from tests.support.gmi_fixtures import Build, disk_only_build, hyperv_build, local_build, vhdx_master
from tests.support.hyperv_sim import SimBuild

__all__ = ["disk_only_build", "hyperv_build", "vhdx_master"]

PARENT = "disk-only-GMI-Debian-12.zip"


def finish_build(
    root: Path,
    parent_out: Path | None,
    *,
    source: dict[str, str] | None = None,
    guest: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **host: Any,
) -> SimBuild:
    """A Hyper-V spec (SIMULATOR, host D:\\GMI a folder here) finishing the package in
    ``parent_out`` (copied with its SHA256SUMS and statement into ``root/parent``)."""
    root.mkdir(parents=True, exist_ok=True)
    if guest is None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(root / "key"))
    if parent_out is not None:
        shutil.copytree(parent_out, root / "parent")
    host_spec: dict[str, Any] = {
        "kind": "hyperv",
        "host": "hv.example.test",
        "vm_path": "D:\\GMI\\build",
        "export_path": "D:\\GMI\\export",
        "boot_timeout_s": 3,
        "shutdown_timeout_s": 5,
        "transfer_chunk_mib": 1,
        "simulator": {"state": "sim.json", "kvp_delay_s": 0.05},
        **host,
    }
    spec = {
        "name": "hv-finish",
        "os": {"name": "Debian", "version": "12", "family": "apt"},
        "host": host_spec,
        "source": source or {"gmi_package": f"parent/{PARENT}"},
        "guest": guest or {"user": "genie", "ssh_private_key": "file:key"},
        "output": {"dir": "out"},
        **(extra or {}),
    }
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    b = SimBuild(root, spec_path, root / "events.db", root / "sim.json")
    b.sim().mount("D:\\GMI", root / "host-D-GMI")
    return b


def _build_id(b: SimBuild) -> str:
    (bid,) = builds.open_store(b.db).build_ids()
    return bid


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_disk_only_gmi_is_finished_into_an_importable_one(tmp_path: Path, disk_only_build: Build) -> None:
    b = finish_build(tmp_path / "b", disk_only_build.out)
    parent_zip = b.dir / "parent" / PARENT
    parent_sidecar = yaml.safe_load(zipfile.ZipFile(parent_zip).read("gmi-metadata.yml"))
    run = b.cli("run", "spec.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SIMULATOR" in run.stderr

    # The finished package passes validate as a full GMI vmgenie can import (exit 0).
    out = b.dir / "out"
    zip_path = out / "GMI-Debian-12.zip"
    code, report, err = b.run_json("validate", str(zip_path))
    assert code == ExitCode.OK, (report, err)
    assert report["variant"] == "hyperv-export" and report["importable_by_vmgenie"]
    names = zipfile.ZipFile(zip_path).namelist()
    assert [n for n in names if n.startswith("Virtual Machines/") and n.endswith(".vmcx")]
    assert "Virtual Hard Disks/GMI Debian 12.vhdx" in names

    # Its sidecar and statement name the parent: file name, sha256, event-log head.
    sidecar = yaml.safe_load(zipfile.ZipFile(zip_path).read("gmi-metadata.yml"))
    assert sidecar["parent"] == {
        "package": PARENT,
        "sha256": _sha256(parent_zip),
        "event_log_head_hash": parent_sidecar["event_log"]["head_hash"],
    }
    stmt = json.loads((out / "GMI-Debian-12.intoto.json").read_text())
    deps = {d["name"]: d for d in stmt["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["parent-package"]["digest"]["sha256"] == _sha256(parent_zip)
    assert (
        deps["parent-package"]["annotations"]["event_log_head_hash"]
        == parent_sidecar["event_log"]["head_hash"]
    )
    # What the parent's sidecar said about the disk is carried over.
    assert sidecar["kernel"] == parent_sidecar["kernel"]
    assert sidecar["integration_services"] == parent_sidecar["integration_services"]

    # The disk in the finished package is the parent's (the simulator does not alter a
    # real VHDX), uploaded, attached to a generation 2 VM, exported and fetched.
    assert sidecar["checksum_sha256"] == parent_sidecar["checksum_sha256"]
    state = builds.load_state(builds.open_store(b.db), _build_id(b))
    facts = state.facts
    assert facts["parent.build_id"] == parent_sidecar["build"]["id"]
    assert facts["parent.event_log_seq"] == str(parent_sidecar["event_log"]["seq"])
    assert facts["hyperv.disk_sha256"] == parent_sidecar["checksum_sha256"]
    assert facts["hyperv.generation"] == "2"
    assert facts["hyperv.secure_boot"] == "MicrosoftUEFICertificateAuthority"
    assert facts["hyperv.automatic_checkpoints"] == "False"
    assert all(facts[f"hyperv.ic.{ic}"] == "OK" for ic in ("heartbeat", "kvp", "vss", "shutdown"))
    assert facts["export.import_check"] == "ok"
    assert facts["package.validated"] == "GMI-Debian-12.zip"
    # The extracted copy of the disk is gone once the host holds it, verified.
    assert not (b.dir / ".gmi-fsm-work" / _build_id(b) / "source.vhdx").exists()

    # The plan: no install, no installer; a fresh seed; Compare-VM; the VM removed at the end.
    sim = b.sim().snapshot()
    calls = [c["script"] for c in sim["calls"]]
    assert "vm-create" not in calls and "vm-configure" not in calls
    order = ["vm-create-from-disk", "vm-configure-disk", "seed-attach", "vm-start", "vm-address"]
    assert [calls.index(c) for c in order] == sorted(calls.index(c) for c in order)
    assert calls.index("media-eject") < calls.index("vm-export") < calls.index("export-compare")
    assert sim["counters"] == {"New-VM": 1, "Export-VM": 1, "Remove-VM": 1}
    assert sim["vms"] == {}
    steps = {
        e.payload["step"]
        for e in builds.history(builds.open_store(b.db), _build_id(b))
        if e.type == "StepStarted"
    }
    assert {"source.prepare", "disk.upload", "integration.verify", "package.validate"} <= steps
    assert "iso.upload" not in steps and "install.wait" not in steps

    # The seed is a NoCloud one for the first boot: a new instance id and the build user's key.
    import pycdlib  # noqa: PLC0415

    iso = pycdlib.PyCdlib()
    iso.open(str(b.dir / ".gmi-fsm-work" / _build_id(b) / "seed.iso"))
    try:
        from io import BytesIO  # noqa: PLC0415

        got = BytesIO()
        iso.get_file_from_iso_fp(got, rr_path="/meta-data")
        assert f"gmi-fsm-finish-{_build_id(b)}" in got.getvalue().decode()
        got = BytesIO()
        iso.get_file_from_iso_fp(got, rr_path="/user-data")
        user_data = yaml.safe_load(got.getvalue().decode())
        pub = asyncssh.read_private_key(str(b.dir / "key")).export_public_key().decode().strip()
        # Only the build user: no distribution default user the seal would not remove.
        (user,) = user_data["users"]
        assert user["ssh_authorized_keys"] == [pub] and user["lock_passwd"] is True
    finally:
        iso.close()


def test_a_vhdx_is_finished_without_a_parent(tmp_path: Path, vhdx_master: Path) -> None:
    b = finish_build(tmp_path / "b", None, source={"vhdx": "disk.vhdx"})
    shutil.copyfile(vhdx_master, b.dir / "disk.vhdx")
    run = b.cli("run", "spec.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    zip_path = b.dir / "out" / "GMI-Debian-12.zip"
    assert b.cli("validate", str(zip_path)).returncode == ExitCode.OK
    sidecar = yaml.safe_load(zipfile.ZipFile(zip_path).read("gmi-metadata.yml"))
    assert sidecar["parent"] is None
    assert sidecar["checksum_sha256"] == _sha256(vhdx_master)


@pytest.mark.parametrize(
    ("make", "field", "message"),
    [
        ("missing", "source.gmi_package", "does not exist"),
        ("full", "source.gmi_package", "is a full GMI"),
        ("other-zip", "source.gmi_package", "is not a GMI package name"),
        ("not-a-zip", "source.gmi_package", "is not a readable zip"),
        ("other-os", "source.gmi_package", "holds Debian 12, the spec builds Debian 13"),
        ("not-vhdx", "source.vhdx", "is not a VHDX"),
    ],
)
def test_a_bad_source_is_refused_before_the_build_starts(
    tmp_path: Path, disk_only_build: Build, hyperv_build: Build, make: str, field: str, message: str
) -> None:
    src: dict[str, str] = {"gmi_package": f"parent/{PARENT}"}
    b = finish_build(tmp_path / "b", disk_only_build.out)
    if make == "missing":
        (b.dir / "parent" / PARENT).unlink()
    elif make == "full":
        shutil.copyfile(hyperv_build.out / "GMI-Debian-12.zip", b.dir / "parent" / "GMI-Debian-12.zip")
        src = {"gmi_package": "parent/GMI-Debian-12.zip"}
    elif make == "other-zip":
        shutil.copyfile(b.dir / "parent" / PARENT, b.dir / "parent" / "image.zip")
        src = {"gmi_package": "parent/image.zip"}
    elif make == "not-a-zip":
        (b.dir / "parent" / PARENT).write_bytes(b"not a zip at all\n" * 10)
    elif make == "not-vhdx":
        (b.dir / "disk.vhdx").write_bytes(b"qcow2 or raw, not vhdx\n" * 10)
        src = {"vhdx": "disk.vhdx"}
    spec = yaml.safe_load(b.spec_path.read_text())
    spec["source"] = src
    if make == "other-os":
        spec["os"]["version"] = "13"
    b.spec_path.write_text(yaml.safe_dump(spec))
    run = b.cli("run", "spec.yaml")
    assert run.returncode == ExitCode.SPEC_INVALID, run.stderr
    assert field in run.stderr and message in run.stderr, run.stderr
    assert not b.db.exists() or not builds.open_store(b.db).build_ids()  # nothing requested


def test_a_tampered_package_fails_its_first_step_with_validates_reason(
    tmp_path: Path, disk_only_build: Build
) -> None:
    b = finish_build(tmp_path / "b", disk_only_build.out)
    zip_path = b.dir / "parent" / PARENT
    data = bytearray(zip_path.read_bytes())
    at = data.rfind(b"GMI-TEST-DISK")  # inside the stored VHDX
    data[at : at + 4] = b"EVIL"
    zip_path.write_bytes(bytes(data))
    code, out, err = b.run_json("run", "spec.yaml")
    assert code == ExitCode.BUILD_FAILED, err
    assert "provision/source.prepare" in json.dumps(out) or "source.prepare" in err
    assert "is not a valid disk-only GMI" in out["message"], out
    assert b.sim().snapshot()["vms"] == {}  # nothing made on the host


def test_a_full_gmi_cannot_be_the_source_of_a_qemu_or_local_build(tmp_path: Path) -> None:
    from orchestrator.spec import validate_spec  # noqa: PLC0415
    from orchestrator.spec_errors import SpecError  # noqa: PLC0415

    base = {
        "name": "x",
        "os": {"name": "Debian", "version": "12", "family": "apt"},
        "source": {"gmi_package": PARENT},
        "guest": {"user": "genie", "ssh_private_key": "file:key"},
    }
    with pytest.raises(SpecError, match="needs host kind hyperv, not qemu"):
        validate_spec({**base, "host": {"kind": "qemu"}})
    with pytest.raises(SpecError, match="give exactly one of base_image, iso, gmi_package, vhdx"):
        validate_spec({**base, "source": {"gmi_package": PARENT, "vhdx": "d.vhdx"}, "host": {"kind": "qemu"}})


@pytest.mark.parametrize("lose_work_copy", [False, True], ids=["work-copy-kept", "work-copy-lost"])
def test_killed_mid_upload_the_resume_continues_from_the_last_checkpoint(
    tmp_path: Path, disk_only_build: Build, lose_work_copy: bool
) -> None:
    b = finish_build(tmp_path / "b", disk_only_build.out)
    size = (disk_only_build.disk).stat().st_size
    assert size > 2 * 1024 * 1024, "the test disk must span several 1 MiB chunks"
    b.sim().set_fault("client_killed_after", ["file-write-pieces", 2])
    crashed = b.cli("run", "spec.yaml")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    written = b.sim().snapshot()["data_bytes"]["written"]
    assert 0 < written < size
    if lose_work_copy:  # the resume checks the package and extracts its disk again
        (b.dir / ".gmi-fsm-work" / _build_id(b) / "source.vhdx").unlink()
    run = b.cli("run", "--resume", _build_id(b))
    assert run.returncode == 0, run.stderr[-3000:]
    total = b.sim().snapshot()["data_bytes"]["written"]
    # The resume sent the rest and at most two chunks again (plus the small seed media).
    assert total - size <= 2 * 1024 * 1024 + 64 * 1024, (total, size)
    assert b.cli("validate", str(b.dir / "out" / "GMI-Debian-12.zip")).returncode == ExitCode.OK


# -- a real disk behind the simulator ------------------------------------------------------


async def _play_guests(sim: HyperVSimulator, proc: subprocess.Popen[str], state_dir: Path, port: int) -> int:
    """Boot a real QEMU VM whenever the simulator starts a VM made from a prepared disk,
    on that uploaded disk (a real file under the mounted host folder) with the seed in
    its second DVD drive; tell the simulator when it is up (KVP and integration
    services then answer) and when it powered off. Returns how many boots it made."""
    vm: QemuVm | None = None
    boots = 0
    try:
        while proc.poll() is None:
            for g in sim.outside_guests():
                running = vm is not None and vm.is_running
                if g["phase"] == "starting" and not running:
                    if vm is not None:
                        await vm.close()
                    vm = QemuVm(
                        VmConfig(
                            name="finish-guest",
                            state_dir=state_dir,
                            disks=[DiskSpec(Path(g["disk"]), "vhdx")],
                            seed_iso=Path(g["seed"]) if g["seed"] else None,
                            memory_mib=1536,
                            ssh_port=port,
                        )
                    )
                    await vm.start()
                    boots += 1
                    await vm.wait_for_port(300)
                    sim.outside_guest_up(g["name"])
                elif running and g["stop_requested"] and vm is not None:
                    await vm.powerdown(60)
                if vm is not None and not vm.is_running and g["phase"] != "off":
                    sim.outside_guest_off(g["name"])
            await asyncio.sleep(0.3)
    finally:
        if vm is not None:
            await vm.close()
    return boots


@pytest.mark.vm
@pytest.mark.timeout(900)
def test_a_real_debian_disk_is_finished_behind_the_simulator(tmp_path: Path) -> None:
    """The disk-only package holds a real Debian 12 disk (the lab's cached base, converted
    to a dynamic VHDX by qemu-img, documented and packaged by gmi-fsm's own package
    stages); the finishing build uploads it to the SIMULATED host, and the simulated VM's
    boot is a real QEMU VM on the uploaded file with the fresh seed: the build logs in
    over SSH as a user only that seed creates, cleans and seals the guest again, and the
    package it makes validates as importable."""
    key, public = lab_ssh_key()
    base = cached_debian_base(user="gmi", authorized_key=public)
    master = tmp_path / "master.vhdx"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            base.disk_format,
            "-O",
            "vhdx",
            "-o",
            "subformat=dynamic",
            str(base.disk),
            str(master),
        ],
        check=True,
    )
    parent = local_build(tmp_path / "parent", master, hyperv=False)
    assert parent.run_op("gmi.document").ok
    assert parent.run_op("gmi.package").ok
    port = free_tcp_port()
    b = finish_build(
        tmp_path / "b",
        parent.out,
        # genie exists only once the fresh seed's cloud-init made it (the base has gmi).
        guest={"user": "genie", "ssh_private_key": f"file:{key}", "ssh_port": port},
        extra={"prepare": {"free_space": "none"}},
        boot_timeout_s=300,
        shutdown_timeout_s=120,
        transfer_chunk_mib=64,
        simulator={
            "state": "sim.json",
            "kvp_delay_s": 0.05,
            "guest_steps": True,
            "guest_address": "127.0.0.1",
            # The export holds the real guest disk: inspect it offline, as on a real host.
            "inspect_export": True,
        },
    )
    sim = b.sim()
    sim.play_guests_outside()
    proc = b.popen("run", "spec.yaml")
    loop = asyncio.new_event_loop()
    try:
        boots = loop.run_until_complete(_play_guests(sim, proc, tmp_path / "vm", port))
    finally:
        loop.close()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-4000:]
    assert boots == 1

    bid = _build_id(b)
    audit = json.loads(b.cli("audit", bid, "--format", "json").stdout)
    guest = [c for c in audit["commands"] if c["target"] == "guest" and c["kind"] == "step"]
    names = {c["step"] for c in guest}
    assert {"wait-first-boot", "facts-os", "seal-and-power-off"} <= names
    assert "install-daemons" not in names and "datasource-nocloud" not in names  # the disk is prepared
    assert all(c["outcome"] == "succeeded" for c in guest)
    facts = audit["facts"]
    assert facts["os.id"] == "debian"
    assert facts["guest.ssh_host_key_fingerprint"].startswith("SHA256:")
    assert all(facts[f"hyperv.ic.{ic}"] == "OK" for ic in ("heartbeat", "kvp", "vss", "shutdown"))
    # The seed's user is the finishing build's own: the seal removed it, and the finished
    # disk holds nothing of that boot (offline, with libguestfs, every contract item).
    assert facts["guest.user_created"] == "true" and facts["guest.user_removed_at_seal"] == "true"
    inspected = {k: v for k, v in facts.items() if k.startswith("validate.inspect.")}
    assert len(inspected) > 20 and all(v.startswith("pass") for v in inspected.values()), inspected

    zip_path = b.dir / "out" / "GMI-Debian-12.zip"
    code, report, err = b.run_json("validate", str(zip_path))
    assert code == ExitCode.OK, (report, err)
    sidecar = yaml.safe_load(zipfile.ZipFile(zip_path).read("gmi-metadata.yml"))
    assert sidecar["parent"]["package"] == PARENT
    assert sidecar["parent"]["sha256"] == _sha256(b.dir / "parent" / PARENT)
    # The guest ran and was sealed again: the finished disk is not the parent's.
    assert sidecar["checksum_sha256"] != facts["parent.vhdx_sha256"]


def test_integration_services_not_ok_fail_the_finish(tmp_path: Path, disk_only_build: Build) -> None:
    """integration.verify fails naming every service that is not OK (here: the VM made
    from the disk was never started, so none has contact)."""
    from orchestrator.hyperv.host import HyperVHost  # noqa: PLC0415
    from orchestrator.hyperv.invoke import run_script  # noqa: PLC0415
    from orchestrator.spec import load_spec  # noqa: PLC0415

    b = finish_build(tmp_path / "b", disk_only_build.out)
    spec, _ = load_spec(b.spec_path)
    sim = b.sim()
    host = HyperVHost(spec, b.dir, "bid-1", sim)
    sim.put_file("D:\\GMI\\build\\GMI Debian 12\\Virtual Hard Disks\\bid-1\\GMI Debian 12.vhdx", b"disk")
    provision = {s.name: s for s in host.plan("provision")}
    (verify,) = [s for s in host.plan("hyperv_integration") if s.target == "host"]
    assert verify.name == "integration.verify"

    async def go() -> tuple[int | None, str]:
        for name in ("vm.create", "vm.configure"):
            cmd = provision[name].command
            assert (await run_script(sim, cmd.text, dict(cmd.params), timeout_s=10)).exit == 0
        result = await host.target("host").run(verify.command, timeout_s=10, sink=lambda _s, _d: None)
        return result.exit_code, result.error

    code, error = asyncio.run(go())
    assert code == 1
    assert "integration services not OK: guest_service_interface, heartbeat, kvp, shutdown, vss" in error


def _host_step_starts(b: SimBuild) -> list[tuple[int, str]]:
    return [
        (ev.seq, f"{ev.payload['stage']}/{ev.payload['step']}")
        for ev in builds.history(builds.open_store(b.db), _build_id(b))
        if ev.type == "StepStarted" and ev.payload["target"] == "host" and not ev.payload.get("probe")
    ]


def test_finish_killed_at_every_host_step_resumes_without_duplicate_work(
    tmp_path: Path, disk_only_build: Build
) -> None:
    ref = finish_build(tmp_path / "ref", disk_only_build.out)
    assert ref.cli("run", "spec.yaml").returncode == 0
    starts = _host_step_starts(ref)
    assert len(starts) >= 18

    def crash_and_resume(item: tuple[int, str]) -> str:
        seq, step = item
        b = finish_build(tmp_path / f"k{seq}", disk_only_build.out)
        crashed = b.cli("run", "spec.yaml", kill_after_seq=seq)
        if crashed.returncode != -signal.SIGKILL:
            return (
                f"{step}: expected SIGKILL after seq {seq}, got {crashed.returncode}: {crashed.stderr[-500:]}"
            )
        resumed = b.cli("run", "--resume", _build_id(b))
        if resumed.returncode != 0:
            return f"{step}: resume failed ({resumed.returncode}): {resumed.stderr[-800:]}"
        sim = b.sim().snapshot()
        if sim["counters"] != {"New-VM": 1, "Export-VM": 1, "Remove-VM": 1} or sim["vms"]:
            return f"{step}: duplicate or leftover work after the kill: {sim['counters']} {list(sim['vms'])}"
        if b.cli("validate", str(b.dir / "out" / "GMI-Debian-12.zip")).returncode != 0:
            return f"{step}: the package does not validate"
        return ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(crash_and_resume, starts) if p]
    assert not problems, "\n".join(problems)


def test_a_vm_made_without_its_notes_is_finished_on_resume(tmp_path: Path, disk_only_build: Build) -> None:
    """The connection is lost between New-VM and Set-VM -Notes: the VM on the build's own
    disk path is recognised as this build's, half made, and gets its Notes on resume."""
    b = finish_build(tmp_path / "b", disk_only_build.out)
    b.sim().set_fault("host_gone_after", "New-VM")
    first = b.cli("run", "spec.yaml")
    assert first.returncode == ExitCode.BUILD_FAILED, first.stderr[-2000:]
    vm = b.sim().snapshot()["vms"]["gmi debian 12"]
    assert vm["notes"] == ""
    resumed = b.cli("run", "--resume", _build_id(b))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert b.sim().snapshot()["counters"]["New-VM"] == 1
