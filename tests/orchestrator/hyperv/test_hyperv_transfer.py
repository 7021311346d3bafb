"""Transfers between gmi-fsm and a Hyper-V host: over SMB 3 to a real Samba server (the
simulated host's folder D:\\GMI is the share's folder, so its scripts hash and rename what
arrived over SMB), and over PowerShell Remoting through the SIMULATOR.

The kill tests run the CLI as a real process and kill it with SIGKILL in the middle of a
chunk (the unit after which the verified offset is recorded): when the partial file on
the host (or here) has grown past a checkpoint by half a chunk, or, for PSRP, through the
simulator's ``client_killed_after`` fault right after a data call took effect on the
host. The resumed attempt must start at the last checkpoint and send again at most two
chunks, which is checked against what was on the host at the kill, and against what an
independent witness saw move: a TCP relay counting the bytes between gmi-fsm and Samba,
or the simulated host's count of bytes its data scripts wrote or read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import builds
from orchestrator.exit_codes import ExitCode
from orchestrator.hyperv.channels import CALL_BYTES, PIECE_BYTES
from orchestrator.hyperv.executor import PsResult
from orchestrator.hyperv.simulator import HyperVSimulator
from orchestrator.hyperv.smb import SmbLogin
from orchestrator.hyperv.transfer import TransferOptions, download_folder, upload_file
from orchestrator.targets.base import TargetError
from tests.support.hyperv_sim import SimBuild, write_build
from tests.support.samba import SambaServer, samba_unavailable_reason, start_samba
from tests.support.sshd import free_port
from tests.support.tcp_relay import TcpRelay

MiB = 1 << 20
VM = "GMI Ubuntu 24.04"
PASSWORD_ENV = "HV_TEST_SMB_PASSWORD"


@pytest.fixture
def samba(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SambaServer]:
    """A real Samba server on 127.0.0.1 with share GMI; its password in the environment
    under the name the specs reference."""
    reason = samba_unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = start_samba(tmp_path / "samba")
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    try:
        yield server
    finally:
        server.stop()


def smb_build(root: Path, samba: SambaServer, *, port: int | None = None, **host: Any) -> SimBuild:
    """A simulated build whose transfers go over SMB to ``samba`` (directly or via a relay)."""
    spec: dict[str, Any] = {
        "host": "127.0.0.1",
        "smb_share": "GMI",
        "smb_port": port or samba.port,
        "auth": "ntlm",
        "username": samba.user,
        "password": f"env:{PASSWORD_ENV}",
        "transfer_chunk_mib": 1,
    }
    spec.update(host)
    b = write_build(root, **spec)
    sim = b.sim()
    sim.mount("D:\\GMI", samba.share_dir)
    sim.add_smb_share("GMI", "D:\\GMI")
    return b


def psrp_build(root: Path, **host: Any) -> SimBuild:
    """A simulated build without a share: transfers over PowerShell Remoting. The host's
    D:\\GMI is a folder here, so its files are real files."""
    b = write_build(root, **host)
    b.sim().mount("D:\\GMI", root / "host-D-GMI")
    return b


def _build_id(b: SimBuild) -> str:
    (bid,) = builds.open_store(b.db).build_ids()
    return bid


def _progress(b: SimBuild, step: str) -> list[tuple[int, dict[str, str]]]:
    """(attempt, values) of each StepProgress of ``stage/step``, in order."""
    stage, name = step.split("/")
    out = []
    for ev in builds.history(builds.open_store(b.db), _build_id(b)):
        p = ev.payload
        if ev.type == "StepProgress" and (p["stage"], p["step"]) == (stage, name):
            out.append((int(p["attempt"]), dict(p["values"])))
    return out


def _last_offset(b: SimBuild, step: str) -> int:
    return int(_progress(b, step)[-1][1]["offset"])


def _first_of_attempt(b: SimBuild, step: str, attempt: int) -> dict[str, str]:
    return next(v for a, v in _progress(b, step) if a == attempt)


def _kill_when(proc: Any, grown: Path, size: int, timeout_s: float = 120) -> None:
    """SIGKILL the CLI once ``grown`` holds at least ``size`` bytes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"the run ended ({proc.returncode}) before {grown} reached {size} bytes: {err[-2000:]}"
            )
        if grown.exists() and grown.stat().st_size >= size:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            assert proc.returncode == -signal.SIGKILL
            return
        time.sleep(0.003)
    proc.kill()
    pytest.fail(f"{grown} did not reach {size} bytes in {timeout_s} s")


def _settle(path: Path) -> int:
    """The size of ``path`` once nothing more arrives (the server finishing what was sent)."""
    size = -1
    while path.exists() and path.stat().st_size != size:
        size = path.stat().st_size
        time.sleep(0.3)
    return size


# -- a whole build over SMB ------------------------------------------------------------------


def test_a_build_moves_its_iso_seed_and_export_over_smb(tmp_path: Path, samba: SambaServer) -> None:
    b = smb_build(tmp_path / "b", samba)
    iso = os.urandom(3 * MiB + 123)
    (b.dir / "installer.iso").write_bytes(iso)
    b.sim().set_new_vhdx_bytes(2 * MiB)
    code, out, err = b.run_json("run", str(b.spec_path))
    assert code == 0, err
    # Over SMB: the share's folder holds the ISO and seed, and nothing went through the
    # simulated host's PSRP data scripts.
    assert (samba.share_dir / "build" / "installer.iso").read_bytes() == iso
    assert not list(samba.share_dir.rglob("*.gmi-fsm-part"))
    assert b.sim().snapshot()["data_bytes"] == {"written": 0, "read": 0}
    fetched = b.dir / "out" / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
    assert fetched.stat().st_size > 2 * MiB
    vhdx_sha = next(
        ev.payload["value"]
        for ev in builds.history(builds.open_store(b.db), _build_id(b))
        if ev.type == "FactRecorded" and ev.payload["key"] == "export.vhdx_sha256"
    )
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == vhdx_sha
    # A checkpoint after every chunk (1 MiB here), each naming the channel at the start.
    iso_progress = [v for _, v in _progress(b, "provision/iso.upload")]
    assert iso_progress[0]["channel"] == "smb" and iso_progress[0]["started_at"] == "0"
    assert [int(v["offset"]) for v in iso_progress] == [0, MiB, 2 * MiB, 3 * MiB, len(iso)]
    fetch = [v for _, v in _progress(b, "export/export.fetch") if v.get("channel")]
    assert {v["channel"] for v in fetch} == {"smb"}


def test_a_path_outside_the_share_is_refused_naming_both(tmp_path: Path, samba: SambaServer) -> None:
    b = smb_build(tmp_path / "b", samba, iso_path="E:\\ISO\\installer.iso")
    code, out, err = b.run_json("run", str(b.spec_path))
    assert code == ExitCode.BUILD_FAILED
    assert "E:\\ISO\\installer.iso is outside the folder SMB share 'GMI' serves (D:\\GMI)" in out["message"]
    assert "remove host.smb_share" in out["message"]
    # Refused, not retried: one attempt of the step.
    attempts = {
        ev.payload["attempt"]
        for ev in builds.history(builds.open_store(b.db), _build_id(b))
        if ev.type == "StepStarted" and ev.payload["step"] == "iso.upload"
    }
    assert attempts == {1}


# -- the PSRP pieces ---------------------------------------------------------------------------


class Recording:
    """Keeps the name, parameters and pipeline input of every call."""

    def __init__(self, inner: HyperVSimulator) -> None:
        self.inner = inner
        self.label = inner.label
        self.calls: list[tuple[str, dict[str, object], list[str] | None]] = []

    async def run(
        self,
        script: str,
        params: Mapping[str, object],
        *,
        timeout_s: float,
        input: Sequence[str] | None = None,
    ) -> PsResult:
        from orchestrator.hyperv.scripts import script_name

        self.calls.append((str(script_name(script)), dict(params), None if input is None else list(input)))
        return await self.inner.run(script, params, timeout_s=timeout_s, input=input)

    async def close(self) -> None:
        await self.inner.close()


def test_psrp_moves_many_pieces_per_pipeline_each_call_confirmed(tmp_path: Path) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    sim.mount("D:\\GMI", tmp_path / "host")
    rec = Recording(sim)
    data = os.urandom(20 * MiB + 5)
    src = tmp_path / "big.iso"
    src.write_bytes(data)
    opts = TransferOptions(call_timeout_s=60)
    done = asyncio.run(upload_file(rec, src, "D:\\GMI\\build\\big.iso", options=opts, sink=lambda s, d: None))
    assert (done.channel, done.sent, done.skipped) == ("psrp", len(data), False)
    assert (tmp_path / "host" / "build" / "big.iso").read_bytes() == data
    writes = [(p, pieces) for name, p, pieces in rec.calls if name == "file-write-pieces"]
    assert [p["Offset"] for p, _ in writes] == [0, CALL_BYTES, 2 * CALL_BYTES]
    assert [len(pieces or []) for _, pieces in writes] == [8, 8, 5]
    for _, pieces in writes:
        assert pieces is not None
        assert all(len(piece) <= (PIECE_BYTES + 2) // 3 * 4 for piece in pieces)  # 1 MiB in base64
        assert sum(len(piece) for piece in pieces) < 12_000_000  # well under 50 MB per command
    rec.calls.clear()
    got = asyncio.run(
        download_folder(rec, "D:\\GMI\\build", tmp_path / "here", options=opts, sink=lambda s, d: None)
    )
    assert [(f.name, f.channel, f.size, f.skipped) for f in got] == [("big.iso", "psrp", len(data), False)]
    assert (tmp_path / "here" / "big.iso").read_bytes() == data
    reads = [p for name, p, _ in rec.calls if name == "file-read-pieces"]
    assert [(p["Offset"], p["Length"], p["PieceBytes"]) for p in reads] == [
        (0, CALL_BYTES, PIECE_BYTES),
        (CALL_BYTES, CALL_BYTES, PIECE_BYTES),
        (2 * CALL_BYTES, 4 * MiB + 5, PIECE_BYTES),
    ]
    assert sim.snapshot()["data_bytes"] == {"written": len(data), "read": len(data)}


def test_a_call_whose_bytes_the_host_reports_otherwise_is_not_counted(tmp_path: Path) -> None:
    class Lying(Recording):
        async def run(self, script: str, params: Mapping[str, object], **kw: Any) -> PsResult:
            result = await super().run(script, params, **kw)
            if self.calls[-1][0] == "file-write-pieces":
                doc = json.loads(json.dumps(result.output[0]))
                doc["facts"]["sha256"] = "0" * 64
                return PsResult(output=[doc])
            return result

    sim = HyperVSimulator(tmp_path / "sim.json")
    src = tmp_path / "x.iso"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(TargetError, match="other bytes") as caught:
        asyncio.run(
            upload_file(
                Lying(sim),
                src,
                "D:\\GMI\\x.iso",
                options=TransferOptions(call_timeout_s=10),
                sink=lambda s, d: None,
            )
        )
    assert caught.value.retryable
    assert "D:\\GMI\\x.iso" not in {f["path"] for f in sim.snapshot()["files"].values()}


# -- kill -9 in the middle of a chunk, then resume ------------------------------------------------


def test_smb_upload_killed_mid_chunk_resends_at_most_two_chunks(tmp_path: Path, samba: SambaServer) -> None:
    chunk = 2 * MiB  # two SMB writes of 1 MiB each
    relay = TcpRelay((samba.host, samba.port), rate_bytes_per_s=3 * MiB).start()
    try:
        b = smb_build(tmp_path / "b", samba, port=relay.port, install="manual", transfer_chunk_mib=2)
        iso = os.urandom(10 * MiB + 777)
        (b.dir / "installer.iso").write_bytes(iso)
        part = samba.share_dir / "build" / "installer.iso.gmi-fsm-part"
        # Killed once the first half of the third chunk is on the host.
        _kill_when(b.popen("run", str(b.spec_path)), part, 2 * chunk + chunk // 2)
        relay.drop_connections()
        on_host = _settle(part)
        checkpoint = _last_offset(b, "provision/iso.upload")
        assert 0 < checkpoint <= on_host < len(iso)
        relay.rate_bytes_per_s = 0
        relay.reset_counts()
        code, out, err = b.run_json("run", "--resume", _build_id(b))
        # `install: manual` stops for the operator after the upload: the resumed run moves
        # nothing else over SMB.
        assert code == ExitCode.BUILD_FAILED and "waiting for the operator" in out["message"], err
        first = _first_of_attempt(b, "provision/iso.upload", 2)
        start = int(first["started_at"])
        assert start == checkpoint
        assert 0 <= on_host - start <= 2 * chunk  # sent again: at most two chunks
        remaining = len(iso) - start
        assert remaining <= relay.to_server <= remaining + 256 * 1024  # the witness agrees
        assert (samba.share_dir / "build" / "installer.iso").read_bytes() == iso
        assert not part.exists()
    finally:
        relay.stop()


@pytest.mark.parametrize(
    ("chunk_mib", "size", "kill_after_calls", "checkpoint"),
    [
        # One call per chunk: killed after the third chunk landed, before its checkpoint.
        (2, 12 * MiB + 3, 3, 4 * MiB),
        # Two calls per chunk: killed halfway through the second chunk.
        (16, 40 * MiB + 3, 3, 16 * MiB),
    ],
    ids=["chunk-of-one-call", "mid-chunk"],
)
def test_psrp_upload_killed_mid_chunk_resends_at_most_two_chunks(
    tmp_path: Path, chunk_mib: int, size: int, kill_after_calls: int, checkpoint: int
) -> None:
    chunk = chunk_mib * MiB
    b = psrp_build(tmp_path / "b", transfer_chunk_mib=chunk_mib, install="manual")
    iso = os.urandom(size)
    (b.dir / "installer.iso").write_bytes(iso)
    b.sim().set_fault("client_killed_after", ["file-write-pieces", kill_after_calls])
    crashed = b.cli("run", str(b.spec_path))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    part = tmp_path / "b" / "host-D-GMI" / "build" / "installer.iso.gmi-fsm-part"
    on_host = part.stat().st_size
    assert on_host == kill_after_calls * min(CALL_BYTES, chunk)
    assert _last_offset(b, "provision/iso.upload") == checkpoint
    written_before = b.sim().snapshot()["data_bytes"]["written"]
    code, out, err = b.run_json("run", "--resume", _build_id(b))
    assert code == ExitCode.BUILD_FAILED and "waiting for the operator" in out["message"], err
    start = int(_first_of_attempt(b, "provision/iso.upload", 2)["started_at"])
    assert start == checkpoint
    assert 0 < on_host - start <= 2 * chunk  # sent again: at most two chunks
    assert b.sim().snapshot()["data_bytes"]["written"] - written_before == size - start
    assert (tmp_path / "b" / "host-D-GMI" / "build" / "installer.iso").read_bytes() == iso


def test_smb_download_killed_mid_chunk_resumes_at_the_last_checkpoint(
    tmp_path: Path, samba: SambaServer
) -> None:
    chunk = 2 * MiB  # two SMB reads of 1 MiB each
    relay = TcpRelay((samba.host, samba.port), rate_bytes_per_s=3 * MiB).start()
    try:
        b = smb_build(tmp_path / "b", samba, port=relay.port, transfer_chunk_mib=2)
        b.sim().set_new_vhdx_bytes(9 * MiB)
        fetched = b.dir / "out" / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
        part = fetched.with_name(fetched.name + ".gmi-fsm-part")
        # Killed once the first half of the third chunk is here.
        _kill_when(b.popen("run", str(b.spec_path)), part, 2 * chunk + chunk // 2)
        relay.drop_connections()
        here = part.stat().st_size
        checkpoint = _last_offset(b, "export/export.fetch")
        assert 0 < checkpoint <= here
        relay.rate_bytes_per_s = 0
        relay.reset_counts()
        code, _, err = b.run_json("run", "--resume", _build_id(b))
        assert code == 0, err
        first = _first_of_attempt(b, "export/export.fetch", 2)
        start = int(first["started_at"])
        assert first["file"].endswith(f"{VM}.vhdx") and start == checkpoint
        assert 0 <= here - start <= 2 * chunk
        source = samba.share_dir / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
        remaining = source.stat().st_size - start
        # The witness: what the server sent in the resumed run (the VHDX's rest, the small
        # files of the export, SMB's own messages).
        assert remaining <= relay.to_client <= remaining + 512 * 1024
        assert fetched.read_bytes() == source.read_bytes()
        assert not part.exists()
    finally:
        relay.stop()


def test_psrp_download_killed_then_resumed(tmp_path: Path) -> None:
    chunk = 2 * MiB
    b = psrp_build(tmp_path / "b", transfer_chunk_mib=2)
    b.sim().set_new_vhdx_bytes(11 * MiB)
    b.sim().set_fault("client_killed_after", ["file-read-pieces", 3])
    crashed = b.cli("run", str(b.spec_path))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    fetched = b.dir / "out" / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
    part = fetched.with_name(fetched.name + ".gmi-fsm-part")
    checkpoint = _last_offset(b, "export/export.fetch")
    assert part.stat().st_size == checkpoint == 2 * chunk  # the third call's bytes never arrived
    read_before = b.sim().snapshot()["data_bytes"]["read"]
    code, _, err = b.run_json("run", "--resume", _build_id(b))
    assert code == 0, err
    assert int(_first_of_attempt(b, "export/export.fetch", 2)["started_at"]) == checkpoint
    export = tmp_path / "b" / "host-D-GMI" / "export" / VM
    source = export / "Virtual Hard Disks" / f"{VM}.vhdx"
    # The host read the rest of the VHDX and the export's small files (fetched after it;
    # the ownership marker stays on the host), nothing more.
    small = sum(
        f.stat().st_size
        for f in export.rglob("*")
        if f.is_file() and f != source and f.name != "gmi-fsm-export.json"
    )
    moved = b.sim().snapshot()["data_bytes"]["read"] - read_before
    assert moved == source.stat().st_size - checkpoint + small
    assert fetched.read_bytes() == source.read_bytes()


def test_a_partial_file_whose_prefix_differs_is_started_again(tmp_path: Path, samba: SambaServer) -> None:
    # Upload over PSRP: the host's part file is damaged before the resume.
    b = psrp_build(tmp_path / "up", transfer_chunk_mib=2, install="manual")
    iso = os.urandom(8 * MiB)
    (b.dir / "installer.iso").write_bytes(iso)
    b.sim().set_fault("client_killed_after", ["file-write-pieces", 3])
    assert b.cli("run", str(b.spec_path)).returncode == -signal.SIGKILL
    part = tmp_path / "up" / "host-D-GMI" / "build" / "installer.iso.gmi-fsm-part"
    with part.open("r+b") as fh:
        fh.seek(MiB)
        fh.write(b"\xff")
    code, out, err = b.run_json("run", "--resume", _build_id(b))
    assert code == ExitCode.BUILD_FAILED and "waiting for the operator" in out["message"], err
    assert _first_of_attempt(b, "provision/iso.upload", 2)["started_at"] == "0"
    assert (tmp_path / "up" / "host-D-GMI" / "build" / "installer.iso").read_bytes() == iso
    # Download over SMB: this machine's part file is damaged before the resume.
    relay = TcpRelay((samba.host, samba.port), rate_bytes_per_s=3 * MiB).start()
    try:
        d = smb_build(tmp_path / "down", samba, port=relay.port)
        d.sim().set_new_vhdx_bytes(6 * MiB)
        fetched = d.dir / "out" / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
        local_part = fetched.with_name(fetched.name + ".gmi-fsm-part")
        _kill_when(d.popen("run", str(d.spec_path)), local_part, 3 * MiB)
        relay.drop_connections()
        with local_part.open("r+b") as fh:
            fh.write(b"\x00\x01")
        relay.rate_bytes_per_s = 0
        code, out, err = d.run_json("run", "--resume", _build_id(d))
        assert code == 0, err
        assert _first_of_attempt(d, "export/export.fetch", 2)["started_at"] == "0"
        source = samba.share_dir / "export" / VM / "Virtual Hard Disks" / f"{VM}.vhdx"
        assert fetched.read_bytes() == source.read_bytes()
    finally:
        relay.stop()


# -- failures said clearly -------------------------------------------------------------------------


def test_a_wrong_password_or_port_is_a_clear_error(tmp_path: Path, samba: SambaServer) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    sim.mount("D:\\GMI", samba.share_dir)
    sim.add_smb_share("GMI", "D:\\GMI")
    src = tmp_path / "x.iso"
    src.write_bytes(b"x" * 5000)

    def upload(login: SmbLogin) -> TargetError:
        opts = TransferOptions(call_timeout_s=30, smb=login)
        with pytest.raises(TargetError) as caught:
            asyncio.run(upload_file(sim, src, "D:\\GMI\\x.iso", options=opts, sink=lambda s, d: None))
        return caught.value

    wrong = "Not-" + samba.password
    refused = upload(SmbLogin(samba.host, "GMI", samba.port, samba.user, wrong, "ntlm"))
    assert "refused the SMB login" in str(refused) and not refused.retryable
    assert wrong not in str(refused) + refused.hint
    closed = free_port()  # nothing listens there
    unreachable = upload(SmbLogin(samba.host, "GMI", closed, samba.user, samba.password, "ntlm"))
    assert "cannot reach the host's SMB server" in str(unreachable) and unreachable.retryable
    assert "445" in unreachable.hint
    noshare = upload(SmbLogin(samba.host, "NOPE", samba.port, samba.user, samba.password, "ntlm"))
    assert "no SMB share named 'NOPE'" in str(noshare) and not noshare.retryable


def test_hyperv_check_logs_in_to_the_share_and_checks_the_paths(tmp_path: Path, samba: SambaServer) -> None:
    b = smb_build(tmp_path / "b", samba)
    code, report, err = b.run_json("hyperv", "check", str(b.spec_path))
    assert code == 0, err
    items = {i["name"]: i for i in report["checks"]}
    assert items["smb-share"]["status"] == "ok" and "D:\\GMI" in items["smb-share"]["detail"]
    assert items["smb-connect"]["status"] == "ok"
    assert "encrypted" in items["smb-connect"]["detail"]
    outside = smb_build(tmp_path / "outside", samba, export_path="E:\\export")
    code, report, _ = outside.run_json("hyperv", "check", str(outside.spec_path))
    assert code == ExitCode.HOST_CHECK_FAILED
    item = {i["name"]: i for i in report["checks"]}["smb-share"]
    assert item["status"] == "fail" and "export_path E:\\export" in item["detail"]
    closed = free_port()
    blocked = smb_build(tmp_path / "blocked", samba, port=closed)
    code, report, _ = blocked.run_json("hyperv", "check", str(blocked.spec_path))
    assert code == ExitCode.HOST_CHECK_FAILED
    item = {i["name"]: i for i in report["checks"]}["smb-connect"]
    assert item["status"] == "fail" and "cannot reach" in item["detail"] and "445" in item["fix"]


def test_killed_after_the_last_chunk_the_resume_sends_nothing_again(tmp_path: Path) -> None:
    # A kill right after the checkpoint of the last byte (GMI_FSM_FAULT_KILL_AFTER_SEQ): the
    # resume checks the host's part file whole, sends nothing, and commits it.
    iso = os.urandom(5 * MiB + 1)
    ref = psrp_build(tmp_path / "ref", transfer_chunk_mib=2, install="manual")
    (ref.dir / "installer.iso").write_bytes(iso)
    ref.cli("run", str(ref.spec_path))
    seqs = [
        ev.seq
        for ev in builds.history(builds.open_store(ref.db), _build_id(ref))
        if ev.type == "StepProgress" and ev.payload["step"] == "iso.upload"
    ]
    b = psrp_build(tmp_path / "b", transfer_chunk_mib=2, install="manual")
    (b.dir / "installer.iso").write_bytes(iso)
    assert b.cli("run", str(b.spec_path), kill_after_seq=seqs[-1]).returncode == -signal.SIGKILL
    assert _last_offset(b, "provision/iso.upload") == len(iso)
    written = b.sim().snapshot()["data_bytes"]["written"]
    code, out, err = b.run_json("run", "--resume", _build_id(b))
    assert code == ExitCode.BUILD_FAILED and "waiting for the operator" in out["message"], err
    assert _first_of_attempt(b, "provision/iso.upload", 2)["started_at"] == str(len(iso))
    assert b.sim().snapshot()["data_bytes"]["written"] == written
    assert (tmp_path / "b" / "host-D-GMI" / "build" / "installer.iso").read_bytes() == iso
