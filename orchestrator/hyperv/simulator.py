"""``HyperVSimulator``: an in-memory stand-in for a Hyper-V host. It is NOT Hyper-V.

It implements :class:`~orchestrator.hyperv.executor.PowerShellExecutor` for tests
and demos. It recognises which of gmi-fsm's fixed scripts it was given (exact text,
see :func:`orchestrator.hyperv.scripts.script_name`), checks the bound parameters
against the script's param block (names, types, ranges: what the real executor puts on
the wire) and plays the script's effect on a small model: VMs, disks, switches, power
states, DVD drives, a checkpoint tree, a fake file system, KVP addresses, integration
services, the account's groups, drives, SMB shares. Where a script's correctness hangs
on how its cmdlets behave, the handler follows the script's own steps through cmdlet
models with Hyper-V's failure modes (``remove_vm_snapshot`` of a checkpoint already
gone, ``New-VM`` before ``Set-VM -Notes``, ``Stop-VM -AsJob``'s job), so a script whose
steps are wrong fails here too. It never evaluates script text; any other text is
refused. What a script did before it failed stays done, as on a host.

Its state lives in a JSON file, read and written under a lock on every call, so two
runs (or a run killed mid-build and its resume) see the same VMs and files. Failures
are injected through the same file (:meth:`HyperVSimulator.set_fault`).

A host folder can be *mounted* on a folder of this machine (:meth:`HyperVSimulator.mount`):
the files under it are real files there, which the scripts read and write in place (a
2 GiB transfer never passes through the JSON state), and which something else may write
too: the tests serve that folder as an SMB share from a real Samba server, so what
gmi-fsm writes over SMB is what the simulated host's scripts hash and rename.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import functools
import hashlib
import json
import ntpath
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.hyperv.acceptance import (
    ADMINISTRATORS,
    HYPERV_ADMINISTRATORS,
    KNOWN_TEMPLATES,
    REMOTE_MANAGEMENT_USERS,
)
from orchestrator.hyperv.executor import (
    PsResult,
    call_timeout,
    connection_lost,
    login_refused,
    unreachable,
)
from orchestrator.hyperv.scripts import ScriptParamError, check_params, reads_input, script_name
from orchestrator.targets.base import TargetError

LABEL = "SIMULATOR (not a Hyper-V host)"

# Integration service ids (as the real scripts match them) -> short name.
_IC = {
    "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47": "heartbeat",
    "2A34B1C2-FD73-4043-8A5B-DD2159BC743F": "kvp",
    "5CED1297-4598-4915-A5FC-AD21BB4D02A4": "vss",
    "9F8233AC-BE49-4C79-8EE3-E7E1985B2077": "shutdown",
    "6C09BB55-D683-4DA0-8931-C9BF705F6480": "guest_service_interface",
}

FAULTS = (
    "auth_refused",
    "client_killed_after",
    "unreachable",
    "host_gone",
    "host_gone_after",
    "kvp_never",
    "optimize_fails",
    "shutdown_refused",
    "timeout",
)
"""``host_gone`` and ``timeout`` name the script they hit; ``host_gone_after`` names a
cmdlet: the host goes away right after it took effect, in the middle of its script
(the script's later cmdlets never run); ``client_killed_after`` is ``[script, n]``: the
gmi-fsm process that runs the simulator is killed with SIGKILL right after the n-th call
of that script (counted from when the fault is set) took effect on the host, a
``kill -9`` at an exact point of a transfer; the others are booleans."""


class ScriptFailed(Exception):
    """A simulated terminating error (what ``throw`` does under ErrorAction Stop). What
    the script did before it stays done, as on a real host."""


class _HostGone(Exception):
    """The ``host_gone_after`` fault: the connection is lost right after a cmdlet."""


def _key(path: str) -> str:
    # Windows paths compare without regard to case.
    return path.casefold()


class HyperVSimulator:
    """A stateful, SIMULATED Hyper-V host behind the PowerShellExecutor seam."""

    def __init__(
        self,
        state_path: str | Path,
        *,
        kvp_delay_s: float = 0.2,
        install_delay_s: float = 0.2,
        guest_address: str = "127.0.0.1",
        sleep_step_s: float = 0.05,
    ) -> None:
        self.state_path = Path(state_path)
        self.label = f"{LABEL} state={self.state_path}"
        self._sleep_step_s = sleep_step_s
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as st:
            st.setdefault("kind", "gmi-fsm Hyper-V SIMULATOR state (not a real host)")
            st.setdefault(
                "host",
                {"name": "SIMULATED-HV", "os": "10.0.20348 (simulated)", "user": "SIM\\builder"},
            )
            # Free GiB per drive of the simulated host; a path on another drive does not exist.
            st.setdefault("drives", {"C:\\": 500, "D:\\": 500, "E:\\": 500})
            st.setdefault("hyperv_module", True)
            # The well-known SIDs of the groups the simulated account is in.
            st.setdefault("groups", [ADMINISTRATORS, HYPERV_ADMINISTRATORS, REMOTE_MANAGEMENT_USERS])
            st.setdefault("switches", ["Default Switch"])
            st.setdefault("smb_shares", {})
            # Host folder -> a folder of this machine holding its files (see mount()).
            st.setdefault("mounts", {})
            # Bytes of placeholder content New-VM puts in a new VHDX (something to transfer).
            st.setdefault("new_vhdx_bytes", 0)
            # What Msvm_SecureBootTemplate lists; [] plays a host that cannot say.
            st.setdefault("secure_boot_templates", list(KNOWN_TEMPLATES))
            st.setdefault("files", {})
            st.setdefault("dirs", {})
            st.setdefault("vms", {})
            st.setdefault("mounted", [])
            st.setdefault("faults", {})
            st.setdefault("counters", {})
            # The bytes the data scripts moved (file-write-pieces, file-read-pieces).
            st.setdefault("data_bytes", {"written": 0, "read": 0})
            st.setdefault("calls", [])
            st["kvp_delay_s"] = kvp_delay_s
            st["install_delay_s"] = install_delay_s
            st["guest_address"] = guest_address

    def __repr__(self) -> str:
        return f"HyperVSimulator({self.state_path})"

    # -- test and demo controls ------------------------------------------------------

    def set_fault(self, name: str, value: object = True) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown simulator fault {name!r}; known: {', '.join(FAULTS)}")
        with self._locked() as st:
            st["faults"][name] = value

    def clear_faults(self) -> None:
        with self._locked() as st:
            st["faults"] = {}

    def snapshot(self) -> dict[str, Any]:
        """A copy of the whole simulated state (for assertions)."""
        with self._locked() as st:
            _sync_mounts(st)
            return json.loads(json.dumps(st))  # type: ignore[no-any-return]

    def put_file(self, path: str, data: bytes) -> None:
        with self._locked() as st:
            _write(st, path, data)

    def mount(self, host_folder: str, local_dir: str | Path) -> None:
        """Keep the files under ``host_folder`` (``D:\\GMI``) as real files in ``local_dir``."""
        local = Path(local_dir).resolve()
        local.mkdir(parents=True, exist_ok=True)
        with self._locked() as st:
            st["mounts"][host_folder.rstrip("\\")] = str(local)
            st["dirs"][_key(host_folder.rstrip("\\"))] = host_folder.rstrip("\\")

    def set_new_vhdx_bytes(self, n: int) -> None:
        """New-VM makes its VHDX this many bytes bigger (placeholder content): an export
        worth transferring."""
        with self._locked() as st:
            st["new_vhdx_bytes"] = n

    def add_smb_share(self, name: str, host_folder: str) -> None:
        """A share as New-SmbShare makes one: ``Get-SmbShare -Name name`` reports its folder."""
        with self._locked() as st:
            st["smb_shares"][name] = host_folder

    def add_checkpoint(self, vm_name: str, *, apply_first: str | None = None) -> str:
        """A checkpoint as Hyper-V makes one (Checkpoint-VM): the VM now writes to a new
        .avhdx, and the checkpoint is a child of the one the VM's state came from.
        ``apply_first`` (a checkpoint id) applies that checkpoint first (Restore-VMSnapshot),
        so the new one starts a branch of the tree. Returns the new checkpoint's id."""
        with self._locked() as st:
            vm = st["vms"][_key(vm_name)]
            if apply_first is not None:
                cp = next(c for c in vm["checkpoints"] if c["id"] == apply_first)
                vm["current_checkpoint"] = cp["id"]
                vm["disks"][0] = cp["disk"]
            return _checkpoint(st, vm, "Checkpoint-VM")

    # -- a real guest behind a simulated VM (finishing a disk, see play_guests_outside) ----

    def play_guests_outside(self) -> None:
        """VMs made from a prepared disk (``vm-create-from-disk``) are played by a real VM
        outside the simulator (a test boots QEMU on the uploaded disk, which is a real file
        under a mounted folder): once started, such a VM reports no KVP address and no
        integration services until :meth:`outside_guest_up`, and it is Off only when
        :meth:`outside_guest_off` says so (a Stop-VM job waits for that)."""
        with self._locked() as st:
            st["outside_guests"] = True

    def outside_guests(self) -> list[dict[str, Any]]:
        """The VMs played outside: name, phase (``starting``: boot it now; ``up``; ``off``),
        whether a Stop-VM job waits for it to power off, and the local files of its disk
        and of the DVD in its second drive (the seed), if any."""
        with self._locked() as st:
            out = []
            for vm in st["vms"].values():
                if "outside" not in vm:
                    continue
                seed = vm["dvds"].get("2")
                job = vm["stop_job"]
                out.append(
                    {
                        "name": vm["name"],
                        "phase": vm["outside"],
                        "stop_requested": job is not None and job["state"] == "Running",
                        "disk": str(_disk_path(st, vm["disks"][0])),
                        "seed": str(_disk_path(st, seed)) if seed else None,
                    }
                )
            return out

    def outside_guest_up(self, vm_name: str) -> None:
        with self._locked() as st:
            vm = st["vms"][_key(vm_name)]
            if vm["state"] == "Running":
                vm.update(outside="up", started_at=time.time())

    def outside_guest_off(self, vm_name: str) -> None:
        """The real guest powered off: so does the simulated VM (a Stop-VM job completes)."""
        with self._locked() as st:
            vm = st["vms"][_key(vm_name)]
            vm.update(state="Off", booted="", started_at=None, outside="off")
            if vm["stop_job"] is not None and vm["stop_job"]["state"] == "Running":
                vm["stop_job"]["state"] = "Completed"

    def operator_installs(self, vm_name: str) -> None:
        """What an operator does for ``install: manual``: install the OS from the
        console (with hv_kvp_daemon) and reboot into it."""
        with self._locked() as st:
            vm = st["vms"][_key(vm_name)]
            disk = _base_disk(vm)
            _write(st, disk, _read(st, disk) + b"installed by an operator (simulated)\n")
            vm.update(state="Running", booted="disk", started_at=time.time())

    # -- the executor ------------------------------------------------------------------

    async def run(
        self,
        script: str,
        params: Mapping[str, object],
        *,
        timeout_s: float,
        input: Sequence[str] | None = None,  # PowerShell's own name: the pipeline's input
    ) -> PsResult:
        name = script_name(script)
        if name is None:
            raise TargetError(
                f"{self.label}: refused a script that is not one of gmi-fsm's fixed scripts",
                hint="the simulator plays only orchestrator/hyperv/scripts/*.ps1; it never evaluates text",
            )
        try:
            # The same names, types and ranges the real executor puts on the wire.
            check_params(name, params)
        except ScriptParamError as exc:
            raise TargetError(f"{self.label}: {exc}") from None
        faults = self.snapshot()["faults"]
        if faults.get("auth_refused"):
            raise login_refused(self.label, "negotiate", "SIMULATED: 401 Unauthorized")
        if faults.get("unreachable"):
            raise unreachable(self.label, "SIMULATED: connection refused")
        if faults.get("timeout") == name:
            await asyncio.sleep(min(timeout_s, 0.05))
            raise call_timeout(self.label, name, timeout_s)
        deadline = time.monotonic() + timeout_s
        handler: Callable[..., Any] = getattr(self, "_op_" + name.replace("-", "_"))
        if reads_input(name):
            pieces = list(input or ())
            if not all(isinstance(piece, str) for piece in pieces):
                raise TargetError(f"{self.label}: {name} reads its pipeline input as text")
            handler = functools.partial(handler, pieces=pieces)
        elif input:
            raise TargetError(f"{self.label}: {name} reads no pipeline input; {len(input)} object(s) sent")
        try:
            result = await self._play(name, handler, params, deadline, timeout_s)
        except ScriptFailed as exc:
            return PsResult(output=[], errors=[f"{exc} (SIMULATED)"], had_errors=True)
        except _HostGone as exc:
            raise connection_lost(self.label, name, f"SIMULATED: the host went away after {exc}") from None
        if faults.get("host_gone") == name:
            raise connection_lost(self.label, name, "SIMULATED: the host went away after the call started")
        self._client_killed_after(name)
        return PsResult(output=[result], errors=[], had_errors=False)

    def _client_killed_after(self, name: str) -> None:
        """The ``client_killed_after`` fault: this process dies here, as from kill -9."""
        with self._locked() as st:
            fault = st["faults"].get("client_killed_after")
            if not fault or fault[0] != name:
                return
            fault[1] -= 1
            if fault[1] > 0:
                return
            st["faults"].pop("client_killed_after")
        os.kill(os.getpid(), signal.SIGKILL)

    async def close(self) -> None:
        return

    async def _play(
        self,
        name: str,
        handler: Callable[[dict[str, Any], Mapping[str, object], float], Any],
        params: Mapping[str, object],
        deadline: float,
        timeout_s: float,
    ) -> Any:
        """Run a handler; a handler that waits (KVP, power off) returns ``None`` while
        it is not done yet and is asked again until the call's deadline. Handlers get the
        wall-clock time the call started, to keep their own ``TimeoutSeconds``."""
        t0 = time.time()
        with self._locked() as st:
            st["calls"].append({"script": name, "params": _jsonable(params)})
        while True:
            failed: Exception | None = None
            with self._locked() as st:
                _sync_mounts(st)
                _advance(st)
                try:
                    result = handler(st, params, t0)
                except (ScriptFailed, _HostGone) as exc:
                    failed = exc  # the state so far is kept: it happened on the host
            if failed is not None:
                raise failed
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                raise call_timeout(self.label, name, timeout_s)
            await asyncio.sleep(self._sleep_step_s)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        lock = self.state_path.with_name(self.state_path.name + ".lock")
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                st: dict[str, Any] = (
                    json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
                )
                yield st
                tmp = self.state_path.with_name(self.state_path.name + ".tmp")
                tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
                os.replace(tmp, self.state_path)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- the scripts, by name ----------------------------------------------------------

    def _op_preflight(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        problems = []
        if not st["hyperv_module"]:
            problems.append("the Hyper-V PowerShell module is not installed")
        if not {ADMINISTRATORS, HYPERV_ADMINISTRATORS} & set(st["groups"]):
            problems.append(
                f"{st['host']['user']} is neither in Hyper-V Administrators nor in Administrators"
            )
        if not problems and _s(p, "SwitchName") not in st["switches"]:
            problems.append(f"no virtual switch named '{_s(p, 'SwitchName')}' (Get-VMSwitch lists them)")
        for d in (_s(p, "VmPath"), _s(p, "ExportPath")):
            if _drive(d) not in st["drives"]:
                raise ScriptFailed(
                    f"New-Item: Cannot find drive. A drive with the name '{_drive(d)}' does not exist"
                )
            st["dirs"][_key(d)] = d
        free = st["drives"][_drive(_s(p, "VmPath"))]
        if free < _i(p, "DiskGiB"):
            problems.append(f"only {free} GiB free for a {_i(p, 'DiskGiB')} GiB disk")
        iso = _s(p, "IsoPath")
        facts = {
            "hyperv.host": st["host"]["name"],
            "hyperv.os": st["host"]["os"],
            "hyperv.user": st["host"]["user"],
            "hyperv.free_gib": str(free),
            "hyperv.iso_present": str(bool(iso) and _key(iso) in st["files"]),
        }
        if problems:
            return _result(1, facts, "preflight failed: " + "; ".join(problems))
        return _result(0, facts, "host ready")

    def _op_host_check(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        """host-check.ps1: reads only; every fact the script reports, from the model."""
        facts = {
            "host.name": st["host"]["name"],
            "host.os_build": st["host"]["os"].split(".")[2].split(" ")[0],
            "host.user": st["host"]["user"],
            "host.powershell": "5.1.20348.2849",
        }
        for sid in (ADMINISTRATORS, HYPERV_ADMINISTRATORS, REMOTE_MANAGEMENT_USERS):
            facts[f"member.{sid}"] = str(sid in st["groups"])
        facts["hyperv.module"] = str(bool(st["hyperv_module"]))
        if st["hyperv_module"]:
            facts["switch.names"] = "|".join(st["switches"])
            facts["switch.found"] = str(_s(p, "SwitchName") in st["switches"])
            facts["secureboot.templates"] = "|".join(st["secure_boot_templates"])
        for key, path in (("vm_path", _s(p, "VmPath")), ("export_path", _s(p, "ExportPath"))):
            facts[f"{key}.exists"] = str(_key(path.rstrip("\\")) in st["dirs"])
            near = path
            while near and not (_key(near.rstrip("\\")) in st["dirs"] or _drive_root(st, near)):
                parent = ntpath.dirname(near.rstrip("\\"))
                near = "" if parent == near.rstrip("\\") else parent
            facts[f"{key}.nearest"] = near
            if near:
                facts[f"{key}.root"] = _drive(near)
                facts[f"{key}.free_gib"] = str(st["drives"][_drive(near)])
        share = _s(p, "SmbShare")
        if share:
            found = {k.casefold(): v for k, v in st["smb_shares"].items()}.get(share.casefold())
            facts["smb.found"] = str(found is not None)
            if found is not None:
                facts["smb.path"] = found
                facts["smb.access"] = f"{st['host']['user']} Allow Full"
        return _result(0, facts, "host facts read")

    def _op_vm_probe(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = st["vms"].get(_key(_s(p, "VmName")))
        if vm is None:
            return _result(1, {}, f"no VM named '{_s(p, 'VmName')}'")
        if _owned(vm, _s(p, "BuildId")):
            return _result(0, {"hyperv.vm_state": vm["state"]}, "the build VM exists")
        if _half_made(vm, _vhd_path(p)):
            return _result(3, {}, f"the build VM '{_s(p, 'VmName')}' is half made (no Notes yet)")
        return _result(2, {}, f"a VM named '{_s(p, 'VmName')}' exists but was not made by this build")

    def _op_vm_create(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        name, bid = _s(p, "VmName"), _s(p, "BuildId")
        vhd = _vhd_path(p)
        vm = st["vms"].get(_key(name))
        if vm is not None:
            if _owned(vm, bid):
                facts = {"hyperv.vm_id": vm["id"], "hyperv.vhdx_path": vhd}
                return _result(0, facts, "the build VM already exists")
            if not _half_made(vm, vhd):
                raise ScriptFailed(f"a VM named '{name}' already exists and was not made by this build")
        else:
            if _key(vhd) in st["files"]:  # an earlier New-VM made the disk only
                _delete(st, vhd)
            if _s(p, "SwitchName") not in st["switches"]:
                raise ScriptFailed(f"New-VM: no switch '{_s(p, 'SwitchName')}'")
            vm = _new_vm(
                st, name, _s(p, "VmPath"), vhd, _i(p, "DiskGiB"), _i(p, "MemoryMiB"), _s(p, "SwitchName")
            )
            _cmdlet(st, "New-VM")
        vm["notes"] = f"gmi-fsm build {bid}"  # Set-VM -Notes
        _cmdlet(st, "Set-VM")
        return _result(0, {"hyperv.vm_id": vm["id"], "hyperv.vhdx_path": vhd}, "VM created")

    def _op_vm_configure(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        vm["dvds"]["1"] = _s(p, "IsoPath")
        return _result(0, _configure(vm, p, ["dvd:1", "disk"]), "VM configured")

    def _op_vm_create_from_disk(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        """New-VM -VHDPath: a generation 2 VM on the uploaded (prepared) disk, then its Notes."""
        name, bid = _s(p, "VmName"), _s(p, "BuildId")
        vhd = _vhd_path(p)
        vm = st["vms"].get(_key(name))
        if vm is not None:
            if _owned(vm, bid):
                facts = {"hyperv.vm_id": vm["id"], "hyperv.vhdx_path": vhd}
                return _result(0, facts, "the build VM already exists")
            if not _half_made(vm, vhd):
                raise ScriptFailed(f"a VM named '{name}' already exists and was not made by this build")
        else:
            if _key(vhd) not in st["files"]:
                raise ScriptFailed(f"the disk {vhd} is not on the host: the upload step puts it there")
            if _s(p, "SwitchName") not in st["switches"]:
                raise ScriptFailed(f"New-VM: no switch '{_s(p, 'SwitchName')}'")
            vm = _vm_record(name, _s(p, "VmPath"), vhd, _i(p, "MemoryMiB"), _s(p, "SwitchName"))
            vm["prepared_disk"] = True  # an installed, sealed OS: it boots from the disk
            st["vms"][_key(name)] = vm
            _count(st, "New-VM")
            _cmdlet(st, "New-VM")
        vm["notes"] = f"gmi-fsm build {bid}"  # Set-VM -Notes
        _cmdlet(st, "Set-VM")
        return _result(0, {"hyperv.vm_id": vm["id"], "hyperv.vhdx_path": vhd}, "VM created from the disk")

    def _op_vm_configure_disk(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        # Set-VMFirmware -FirstBootDevice: a prepared disk boots from itself, no DVD.
        vm = _own_vm(st, p)
        return _result(0, _configure(vm, p, ["disk"]), "VM configured (boots from its disk)")

    def _op_seed_attach(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        if _key(_s(p, "SeedPath")) not in st["files"]:
            raise ScriptFailed(f"the seed media {_s(p, 'SeedPath')} is not on the host")
        vm["dvds"]["2"] = _s(p, "SeedPath")
        return _result(0, {}, "seed media attached")

    def _op_vm_start(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        if vm["state"] == "Running":
            return _result(0, {}, "already running")
        _start(st, vm, key_pressed=bool(p["PressKey"]))
        return _result(0, {}, "started")

    def _op_vm_address(self, st: dict[str, Any], p: Mapping[str, object], t0: float) -> Any:
        vm = _own_vm(st, p)
        if vm["state"] != "Running":
            if not p["StartIfOff"]:
                raise ScriptFailed(f"the build VM is {vm['state']}, not Running")
            _start(st, vm, key_pressed=False)
        ip = _kvp_address(st, vm)
        if ip:
            return _result(0, {"hyperv.guest_ipv4": ip}, f"guest address {ip}")
        if time.time() - t0 >= _i(p, "TimeoutSeconds"):
            seen = ", ".join(_kvp_list(st, vm))
            raise ScriptFailed(
                f"no IPv4 address reported through KVP within {_i(p, 'TimeoutSeconds')} s (seen: '{seen}'): "
                "is hv_kvp_daemon (hyperv-daemons / linux-cloud-tools) installed and running in the guest, "
                "and does the switch give DHCP leases?"
            )
        return None

    def _op_vm_wait_off(self, st: dict[str, Any], p: Mapping[str, object], t0: float) -> Any:
        vm = _own_vm(st, p)
        if vm["state"] == "Off":
            vm["stop_job"] = None  # Remove-Job
            return _result(0, {}, "off")
        if p["StopIfRunning"] and vm["stop_job"] is None:
            _stop_vm_as_job(st, vm)
        job = vm["stop_job"]
        if job is not None and job["state"] == "Failed":
            vm["stop_job"] = None  # Remove-Job
            raise ScriptFailed(
                f"Stop-VM could not shut the build VM down: {job['error']} (the guest must run the "
                "Shutdown integration service: hv_utils, and an OS that honours it)"
            )
        if time.time() - t0 >= _i(p, "TimeoutSeconds"):
            raise ScriptFailed(
                f"the build VM did not power off within {_i(p, 'TimeoutSeconds')} s (state: {vm['state']})"
            )
        return None

    def _op_integration_status(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        talking = vm["state"] == "Running" and vm["booted"] == "disk" and vm.get("outside", "up") == "up"
        facts = {f"hyperv.ic.{short}": ("OK" if talking else "No Contact") for short in _IC.values()}
        return _result(0, facts, "integration services read")

    def _op_checkpoints_merge(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        # As the script does: read the tree again before each removal.
        found = get_vm_snapshot(vm)
        left, removals = found, 0
        while left:
            if removals >= len(found):
                raise ScriptFailed(f"checkpoints still listed after {removals} removals")
            remove_vm_snapshot(st, vm, left[0]["id"], include_children=True)
            removals += 1
            left = get_vm_snapshot(vm)
        if vm["disks"][0].endswith(".avhdx"):
            raise ScriptFailed(f"differencing disks still attached: {vm['disks'][0]}")
        return _result(0, {"hyperv.checkpoints_removed": str(len(found))}, "no checkpoints left")

    def _op_vhd_optimize(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        if vm["state"] != "Off":
            raise ScriptFailed(f"the build VM must be Off to compact its disk (it is {vm['state']})")
        path = vm["disks"][0]
        if path.endswith(".avhdx"):
            raise ScriptFailed(f"the disk is still a differencing disk ({path}): merge checkpoints first")
        before = _size(st, path)
        st["mounted"].append(_key(path))  # Mount-VHD -ReadOnly
        try:
            if st["faults"].get("optimize_fails"):
                raise ScriptFailed(
                    f"Optimize-VHD: Failed to compact the virtual disk {path}: The process cannot access "
                    "the file because it is being used by another process"
                )
            if vm.get("prepared_disk"):
                # A real VHDX (uploaded): the model notes the compaction, never edits the file.
                vm["compacted"] = True
            else:
                data = _read(st, path)
                if b"compacted\n" not in data:
                    _write(st, path, data + b"compacted\n")
        finally:
            st["mounted"].remove(_key(path))  # Dismount-VHD in the script's finally
        after = _size(st, path)
        facts = {"hyperv.vhdx_bytes_before": str(before), "hyperv.vhdx_bytes_after": str(after)}
        return _result(0, facts, f"compacted {before} -> {after} bytes")

    def _op_media_eject(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        if vm["state"] != "Off":
            raise ScriptFailed(f"the build VM must be Off to remove its DVD drives (it is {vm['state']})")
        n = len(vm["dvds"])
        vm["dvds"] = {}
        vm["boot_order"] = ["disk"]
        return _result(0, {}, f"removed {n} DVD drive(s); boots from the disk")

    def _op_vm_export(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        vm = _own_vm(st, p)
        name, bid, root = _s(p, "VmName"), _s(p, "BuildId"), _s(p, "ExportPath")
        final = ntpath.join(root, name)
        marker = ntpath.join(final, "gmi-fsm-export.json")
        if _exists(st, final):
            if _key(marker) in st["files"] and json.loads(_read(st, marker))["build_id"] == bid:
                return _result(0, {"export.dir": final}, "already exported by this build")
            raise ScriptFailed(
                f"the export path {final} already exists and is not this build's export: "
                "move it away or choose another export_path"
            )
        _count(st, "Export-VM")
        files = {
            ntpath.join(final, "Virtual Machines", f"{vm['id'].upper()}.vmcx"): b"SIMULATED vmcx\n",
            ntpath.join(final, "Virtual Machines", f"{vm['id'].upper()}.vmgs"): b"SIMULATED vmgs\n",
            ntpath.join(final, "Virtual Machines", f"{vm['id'].upper()}.VMRS"): b"SIMULATED vmrs\n",
            marker: json.dumps({"build_id": bid, "vm_name": name}).encode(),
        }
        for path, data in files.items():
            _write(st, path, data)
        _copy(st, vm["disks"][0], ntpath.join(final, "Virtual Hard Disks", f"{name}.vhdx"))
        st["dirs"][_key(ntpath.join(final, "Snapshots"))] = ntpath.join(final, "Snapshots")
        return _result(0, {"export.dir": final}, f"exported to {final}")

    def _op_export_probe(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        name, root = _s(p, "VmName"), _s(p, "ExportPath")
        final = ntpath.join(root, name)
        marker = ntpath.join(final, "gmi-fsm-export.json")
        vhd = ntpath.join(final, "Virtual Hard Disks", f"{name}.vhdx")
        vmcx = [f for f in st["files"] if f.startswith(_key(ntpath.join(final, "Virtual Machines")))]
        ok = (
            _key(marker) in st["files"]
            and _key(vhd) in st["files"]
            and json.loads(_read(st, marker))["build_id"] == _s(p, "BuildId")
            and sum(f.endswith(".vmcx") for f in vmcx) == 1
        )
        return _result(0, {}, "export present") if ok else _result(1, {}, "no complete export")

    def _op_export_compare(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        final = _key(ntpath.join(_s(p, "ExportPath"), _s(p, "VmName")))
        under = [f for f in st["files"] if f.startswith(final + "\\")]
        vmcx = [f for f in under if f.endswith(".vmcx")]
        if len(vmcx) != 1:
            raise ScriptFailed(f"the export must hold exactly one .vmcx, found {len(vmcx)}")
        if any(f.endswith(".avhdx") for f in under):
            raise ScriptFailed("the export holds differencing disks")
        return _result(0, {"export.import_check": "ok"}, "Compare-VM found no incompatibility")

    def _op_file_hash(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        path, expect = _s(p, "Path"), _s(p, "ExpectSha256").lower()
        if _key(path) not in st["files"]:
            return _result(1, {}, f"{path} is not on the host")
        digest, size, _prefix = _digest(st, path, 0)
        facts = {"sha256": digest, "size": str(size)}
        if expect and digest != expect:
            return _result(3, facts, f"{path} has sha256 {digest}, expected {expect}")
        return _result(0, facts, f"{path} sha256 {digest}")

    def _op_file_digest(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        path, want = _s(p, "Path"), _i(p, "PrefixLength")
        if _key(path) not in st["files"]:
            return _result(1, {}, f"{path} is not on the host")
        digest, size, prefix = _digest(st, path, want)
        facts = {
            "sha256": digest,
            "size": str(size),
            "prefix_sha256": prefix,
            "prefix_length": str(min(size, max(0, want))),
        }
        return _result(0, facts, f"{path} sha256 {digest}")

    def _op_file_list(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        root = _s(p, "Path").rstrip("\\")
        if not _exists(st, root):
            raise ScriptFailed(f"Cannot find path '{root}' because it does not exist")
        files = [
            {
                "path": st["files"][k]["path"][len(root) + 1 :],
                "size": str(_size(st, st["files"][k]["path"])),
            }
            for k in sorted(st["files"])
            if k.startswith(_key(root) + "\\")
        ]
        return {"exit": 0, "facts": {}, "artifacts": files, "message": f"{len(files)} file(s)"}

    def _op_file_read_pieces(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        path, off, n, piece = _s(p, "Path"), _i(p, "Offset"), _i(p, "Length"), _i(p, "PieceBytes")
        if _key(path) not in st["files"]:
            raise ScriptFailed(f'Exception calling "Open": "Could not find file \'{path}\'."')
        if piece <= 0:
            raise ScriptFailed('Exception calling "new": "Arithmetic operation resulted in an overflow."')
        data = _read_range(st, path, off, max(0, n))
        st["data_bytes"]["read"] += len(data)
        pieces = [
            {"data": base64.b64encode(data[i : i + piece]).decode()} for i in range(0, len(data), piece)
        ]
        facts = {"read": str(len(data)), "sha256": hashlib.sha256(data).hexdigest()}
        return {"exit": 0, "facts": facts, "artifacts": pieces, "message": f"read {len(data)} bytes at {off}"}

    def _op_file_write_pieces(
        self, st: dict[str, Any], p: Mapping[str, object], _d: float, *, pieces: list[str]
    ) -> Any:
        path, off = _s(p, "Path"), _i(p, "Offset")
        parent = ntpath.dirname(path)
        if not _exists(st, parent):
            if _drive(path) not in st["drives"]:
                raise ScriptFailed(
                    f"New-Item: Cannot find drive. A drive with the name '{_drive(path)}' does not exist"
                )
            st["dirs"][_key(parent)] = parent  # New-Item -ItemType Directory
        if off > 0 and _key(path) not in st["files"]:
            raise ScriptFailed(f'Exception calling "Open": "Could not find file \'{path}\'."')
        have = _size(st, path) if off > 0 else 0
        if have < off:
            raise ScriptFailed(f"the partial file {path} holds {have} bytes, fewer than the offset {off}")
        try:
            data = b"".join(base64.b64decode(piece, validate=True) for piece in pieces)
        except binascii.Error:
            raise ScriptFailed(
                'Exception calling "FromBase64String": "The input is not a valid Base-64 string."'
            ) from None
        _write_at(st, path, off, data)
        st["data_bytes"]["written"] += len(data)
        facts = {
            "written": str(len(data)),
            "size": str(off + len(data)),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        return _result(0, facts, f"wrote {len(data)} bytes at {off}")

    def _op_file_commit(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        part, path = _s(p, "PartPath"), _s(p, "Path")
        if _key(part) not in st["files"]:
            raise ScriptFailed(f"Get-FileHash: Cannot find path '{part}' because it does not exist.")
        digest = _digest(st, part, 0)[0]
        if digest != _s(p, "Sha256").lower():
            _delete(st, part)
            raise ScriptFailed(
                f"the upload of {path} arrived damaged (sha256 {digest}, expected {_s(p, 'Sha256')})"
            )
        _move(st, part, path)
        return _result(0, {"sha256": digest}, f"{path} verified")

    def _op_smb_share_path(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        name = _s(p, "Name")
        found = {k.casefold(): v for k, v in st["smb_shares"].items()}.get(name.casefold())
        if found is None:
            return _result(1, {}, f"the host has no SMB share named '{name}'")
        return _result(0, {"smb.path": found}, f"share {name} is {found}")

    def _op_vm_remove(self, st: dict[str, Any], p: Mapping[str, object], _d: float) -> Any:
        name = _s(p, "VmName")
        vm = st["vms"].get(_key(name))
        if vm is not None and not _owned(vm, _s(p, "BuildId")):
            return _result(0, {}, f"a VM named '{name}' exists but is not this build's: left alone")
        if vm is not None:
            for d in vm["disks"]:
                _delete(st, d)
            del st["vms"][_key(name)]
            _count(st, "Remove-VM")
        folder = _key(ntpath.join(_s(p, "VmPath"), name))
        for k in [k for k in st["files"] if k.startswith(folder + "\\")]:
            _delete(st, st["files"][k]["path"])
        seed = _s(p, "SeedPath")
        if seed:
            _delete(st, seed)
        return _result(0, {}, "build VM removed")


# -- the model's rules ------------------------------------------------------------------


def _advance(st: dict[str, Any]) -> None:
    """Let simulated time pass: installers finish and power off, guests shut down."""
    now = time.time()
    for vm in st["vms"].values():
        if vm["state"] != "Running":
            continue
        if vm["booted"] == "installer-seeded" and now - vm["started_at"] >= st["install_delay_s"]:
            disk = _base_disk(vm)
            _write(st, disk, _read(st, disk) + b"installed unattended (simulated)\n")
            vm.update(state="Off", booted="", started_at=None)
        elif (
            vm["stop_job"] is not None
            and vm["stop_job"]["state"] == "Running"
            and now - vm["stop_job"]["started_at"] >= 0.1
            and "outside" not in vm  # a real guest's power-off is reported by outside_guest_off
        ):
            vm.update(state="Off", booted="", started_at=None)
            vm["stop_job"]["state"] = "Completed"


def _start(st: dict[str, Any], vm: dict[str, Any], *, key_pressed: bool) -> None:
    if vm["automatic_checkpoints"]:
        # What Hyper-V does on every start when automatic checkpoints are on.
        _checkpoint(st, vm, "Automatic Checkpoint")
    installed = vm.get("prepared_disk") or b"installed" in _read(st, _base_disk(vm))
    first = vm["boot_order"][0] if vm["boot_order"] else "disk"
    if first.startswith("dvd") and key_pressed and vm["dvds"].get(first.split(":")[1]):
        # The installer: with seed media it installs and powers off by itself.
        vm["booted"] = "installer-seeded" if "2" in vm["dvds"] else "installer"
    else:
        vm["booted"] = "disk" if installed else "no-os"
    vm.update(state="Running", started_at=time.time(), stop_job=None)
    if vm.get("prepared_disk") and st.get("outside_guests"):
        vm["outside"] = "starting"  # a real VM outside boots the disk now


def _kvp_list(st: dict[str, Any], vm: dict[str, Any]) -> list[str]:
    if vm["state"] != "Running":
        return []
    link_local = ["fe80::215:5dff:fe00:1"]
    if vm["booted"] != "disk" or st["faults"].get("kvp_never") or vm.get("outside", "up") != "up":
        return []
    if time.time() - vm["started_at"] < st["kvp_delay_s"]:
        return []
    # The first entry is often IPv6 link-local; the scripts must skip it.
    return [*link_local, "169.254.10.20", st["guest_address"]]


def _kvp_address(st: dict[str, Any], vm: dict[str, Any]) -> str:
    for ip in _kvp_list(st, vm):
        if ":" not in ip and not ip.startswith("169.254."):
            return ip
    return ""


def _drive(path: str) -> str:
    return ntpath.splitdrive(path)[0].upper() + "\\"


def _drive_root(st: dict[str, Any], path: str) -> bool:
    """``path`` is the root of a drive the simulated host has (D:\\ exists as a folder)."""
    return path.rstrip("\\").endswith(":") and _drive(path) in st["drives"]


def _base_disk(vm: dict[str, Any]) -> str:
    return str(vm["base_disk"])


def _new_vm(
    st: dict[str, Any], name: str, vm_path: str, vhd: str, disk_gib: int, memory_mib: int, switch: str
) -> dict[str, Any]:
    """New-VM: a Generation 2 VM with a new VHDX, and no Notes (New-VM cannot set them)."""
    filler = hashlib.shake_256(name.encode()).digest(st["new_vhdx_bytes"]) if st["new_vhdx_bytes"] else b""
    _write(st, vhd, f"SIMULATED VHDX {name} {disk_gib} GiB\n".encode() + filler)
    _count(st, "New-VM")
    vm = _vm_record(name, vm_path, vhd, memory_mib, switch)
    st["vms"][_key(name)] = vm
    return vm


def _vm_record(name: str, vm_path: str, vhd: str, memory_mib: int, switch: str) -> dict[str, Any]:
    """A new generation 2 VM as New-VM leaves it: no Notes, Hyper-V's defaults."""
    vm: dict[str, Any] = {
        "name": name,
        "id": str(uuid.uuid4()),
        "notes": "",
        "generation": 2,
        "path": vm_path,
        "state": "Off",
        "booted": "",
        "started_at": None,
        "stop_job": None,
        "memory_mib": memory_mib,
        "dynamic_memory": False,
        "cpus": 1,
        "secure_boot": True,
        "secure_boot_template": "MicrosoftWindows",
        "tpm": False,
        "automatic_checkpoints": True,
        "switch": switch,
        "base_disk": vhd,
        "disks": [vhd],
        "dvds": {},
        "boot_order": ["disk"],
        "checkpoints": [],
        "current_checkpoint": None,
        "keys_typed": 0,
    }
    return vm


def _configure(vm: dict[str, Any], p: Mapping[str, object], boot_order: list[str]) -> dict[str, str]:
    """The checklist's settings both vm-configure scripts make, and the facts they report."""
    mem = _i(p, "MemoryMiB")
    template = _s(p, "SecureBootTemplate") if p["SecureBoot"] else ""
    vm.update(
        memory_mib=mem,
        dynamic_memory=bool(p["DynamicMemory"]),
        cpus=_i(p, "Cpus"),
        automatic_checkpoints=False,
        secure_boot=bool(p["SecureBoot"]),
        secure_boot_template=template,
        tpm=False,
        boot_order=boot_order,
    )
    return {
        "hyperv.generation": "2",
        "hyperv.memory_mib": str(mem),
        "hyperv.dynamic_memory": str(bool(p["DynamicMemory"])),
        "hyperv.cpus": str(_i(p, "Cpus")),
        "hyperv.secure_boot": template or "off",
        "hyperv.automatic_checkpoints": "False",
        "hyperv.tpm": "False",
    }


def _vhd_path(p: Mapping[str, object]) -> str:
    """Get-GmiVhdPath (the preamble): the disk's folder carries the build id."""
    name = _s(p, "VmName")
    return ntpath.join(_s(p, "VmPath"), name, "Virtual Hard Disks", _s(p, "BuildId"), f"{name}.vhdx")


def _half_made(vm: dict[str, Any], vhd: str) -> bool:
    """Test-GmiHalfMade (the preamble): no Notes, and a disk at this build's own path."""
    return not vm["notes"] and any(_key(d) == _key(vhd) for d in vm["disks"])


def _cmdlet(st: dict[str, Any], name: str) -> None:
    """A cmdlet of the script took effect; the ``host_gone_after`` fault strikes here."""
    if st["faults"].get("host_gone_after") == name:
        st["faults"].pop("host_gone_after")
        raise _HostGone(name)


def _stop_vm_as_job(st: dict[str, Any], vm: dict[str, Any]) -> None:
    """Stop-VM -Force -AsJob: the guest is asked to shut down through its Shutdown
    integration service, which only an installed, running guest answers; the job fails
    when the guest cannot or will not."""
    job: dict[str, Any] = {"state": "Running", "started_at": time.time(), "error": ""}
    if vm["booted"] != "disk":
        job.update(
            state="Failed",
            error=f"Failed to shut down the virtual machine '{vm['name']}': the Shutdown integration "
            "service is not available in the guest (SIMULATED)",
        )
    elif st["faults"].get("shutdown_refused"):
        job.update(
            state="Failed",
            error=f"The guest operating system of '{vm['name']}' refused the shutdown request (SIMULATED)",
        )
    vm["stop_job"] = job


def _checkpoint(st: dict[str, Any], vm: dict[str, Any], name: str) -> str:
    parent_disk = vm["disks"][0]
    child = ntpath.join(ntpath.dirname(vm["base_disk"]), f"{vm['name']}_{uuid.uuid4()}.avhdx")
    _write(st, child, b"SIMULATED differencing disk\n")
    cp = {
        "id": str(uuid.uuid4()),
        "name": f"{name} ({len(vm['checkpoints']) + 1})",
        "parent_id": vm["current_checkpoint"],
        "disk": child,
        "parent_disk": parent_disk,
    }
    vm["checkpoints"].append(cp)
    vm["current_checkpoint"] = cp["id"]
    vm["disks"][0] = child
    return str(cp["id"])


# -- cmdlet models: checkpoints as a tree ------------------------------------------------


def get_vm_snapshot(vm: dict[str, Any]) -> list[dict[str, Any]]:
    """Get-VMSnapshot -VM: every checkpoint of the VM, the whole tree, oldest first."""
    return list(vm["checkpoints"])


def remove_vm_snapshot(
    st: dict[str, Any], vm: dict[str, Any], checkpoint_id: str, *, include_children: bool
) -> None:
    """Remove-VMSnapshot -VMSnapshot X [-IncludeAllChildSnapshots]: X (and its subtree)
    go; a checkpoint that is already gone is an error, as on Hyper-V. Without the switch
    X's children move up to X's parent. With no checkpoint left, the differencing disks
    are merged into the VM's own disk."""
    by_id = {c["id"]: c for c in vm["checkpoints"]}
    if checkpoint_id not in by_id:
        raise ScriptFailed(
            f"Remove-VMSnapshot: the checkpoint {checkpoint_id} of virtual machine '{vm['name']}' "
            "was not found (it was removed already)"
        )
    gone = {checkpoint_id}
    if include_children:
        grew = True
        while grew:
            more = {c["id"] for c in vm["checkpoints"] if c["parent_id"] in gone} - gone
            grew = bool(more)
            gone |= more
    else:
        for c in vm["checkpoints"]:
            if c["parent_id"] == checkpoint_id:
                c["parent_id"] = by_id[checkpoint_id]["parent_id"]
    vm["checkpoints"] = [c for c in vm["checkpoints"] if c["id"] not in gone]
    if vm["current_checkpoint"] in gone:
        vm["current_checkpoint"] = None
    _count(st, "Remove-VMSnapshot")
    if not vm["checkpoints"]:
        # The merge: every .avhdx of this VM goes into its own disk.
        for f in [f for f in st["files"].values() if f["path"].endswith(".avhdx") and _mine(vm, f["path"])]:
            _delete(st, f["path"])
        _write(st, vm["base_disk"], _read(st, vm["base_disk"]) + b"merged checkpoint\n")
        vm["disks"][0] = vm["base_disk"]


def _mine(vm: dict[str, Any], path: str) -> bool:
    return ntpath.basename(path).startswith(f"{vm['name']}_") and _key(ntpath.dirname(path)) == _key(
        ntpath.dirname(vm["base_disk"])
    )


def _owned(vm: dict[str, Any], build_id: str) -> bool:
    return f"gmi-fsm build {build_id}" in vm["notes"]


def _own_vm(st: dict[str, Any], p: Mapping[str, object]) -> dict[str, Any]:
    vm = st["vms"].get(_key(_s(p, "VmName")))
    if vm is None or not _owned(vm, _s(p, "BuildId")):
        raise ScriptFailed(f"the build VM '{_s(p, 'VmName')}' is missing or not ours")
    return vm  # type: ignore[no-any-return]


# -- the host's files: in the JSON state, or real files under a mounted folder ------------


def _mount_of(st: dict[str, Any], path: str) -> tuple[str, Path] | None:
    k = _key(path.rstrip("\\"))
    for host, local in st.get("mounts", {}).items():
        hk = _key(host)
        if k == hk or k.startswith(hk + "\\"):
            return host, Path(local)
    return None


def _disk_path(st: dict[str, Any], path: str) -> Path | None:
    """Where a mounted host path's bytes live on this machine (None: in the state)."""
    entry = st["files"].get(_key(path))
    if entry is not None:
        return Path(entry["disk"]) if "disk" in entry else None
    mount = _mount_of(st, path)
    if mount is None:
        return None
    host, local = mount
    rel = path.rstrip("\\")[len(host) :]
    return local.joinpath(*[part for part in rel.split("\\") if part])


def _sync_mounts(st: dict[str, Any]) -> None:
    """What was written into a mounted folder from outside (over SMB) is on the host now;
    what was removed there is gone."""
    for k in [k for k, f in st["files"].items() if "disk" in f and not Path(f["disk"]).is_file()]:
        del st["files"][k]
    for host, local in st.get("mounts", {}).items():
        for dirpath, dirnames, filenames in os.walk(local):
            rel = os.path.relpath(dirpath, local)
            base = host if rel == "." else ntpath.join(host, *Path(rel).parts)
            for d in dirnames:
                st["dirs"].setdefault(_key(ntpath.join(base, d)), ntpath.join(base, d))
            for name in filenames:
                path = ntpath.join(base, name)
                st["files"].setdefault(_key(path), {"path": path, "disk": os.path.join(dirpath, name)})


def _write(st: dict[str, Any], path: str, data: bytes) -> None:
    _write_at(st, path, 0, data)


def _write_at(st: dict[str, Any], path: str, offset: int, data: bytes) -> None:
    """The file cut at ``offset`` (what lies past it is dropped), then ``data`` there."""
    disk = _disk_path(st, path)
    if disk is None:
        old = _read(st, path) if offset and _key(path) in st["files"] else b""
        new = old[:offset].ljust(offset, b"\0") + data
        st["files"][_key(path)] = {"path": path, "data": base64.b64encode(new).decode()}
        return
    disk.parent.mkdir(parents=True, exist_ok=True)
    with disk.open("r+b" if offset and disk.exists() else "wb") as fh:
        fh.truncate(offset)
        fh.seek(offset)
        fh.write(data)
    st["files"][_key(path)] = {"path": st["files"].get(_key(path), {}).get("path", path), "disk": str(disk)}


def _read(st: dict[str, Any], path: str) -> bytes:
    disk = _disk_path(st, path)
    if disk is not None:
        return disk.read_bytes()
    return base64.b64decode(st["files"][_key(path)]["data"])


def _read_range(st: dict[str, Any], path: str, offset: int, length: int) -> bytes:
    disk = _disk_path(st, path)
    if disk is None:
        return _read(st, path)[offset : offset + length]
    with disk.open("rb") as fh:
        fh.seek(offset)
        return fh.read(length)


def _size(st: dict[str, Any], path: str) -> int:
    disk = _disk_path(st, path)
    return disk.stat().st_size if disk is not None else len(_read(st, path))


def _digest(st: dict[str, Any], path: str, prefix_length: int) -> tuple[str, int, str]:
    """(sha256, size, sha256 of the first ``prefix_length`` bytes), reading once."""
    whole, prefix, size = hashlib.sha256(), hashlib.sha256(), 0
    disk = _disk_path(st, path)
    blocks: Iterator[bytes]
    if disk is None:
        data = _read(st, path)
        blocks = iter([data[i : i + (4 << 20)] for i in range(0, len(data), 4 << 20)])
    else:
        blocks = _file_blocks(disk)
    for block in blocks:
        whole.update(block)
        take = max(0, min(len(block), prefix_length - size))
        prefix.update(block[:take])
        size += len(block)
    return whole.hexdigest(), size, prefix.hexdigest()


def _file_blocks(disk: Path) -> Iterator[bytes]:
    with disk.open("rb") as fh:
        while block := fh.read(4 << 20):
            yield block


def _delete(st: dict[str, Any], path: str) -> None:
    entry = st["files"].pop(_key(path), None)
    if entry is not None and "disk" in entry:
        Path(entry["disk"]).unlink(missing_ok=True)


def _move(st: dict[str, Any], src: str, dst: str) -> None:
    """Move-Item -Force: ``dst`` replaced (a rename when both are on one mounted folder)."""
    source, target = _disk_path(st, src), _disk_path(st, dst)
    if source is not None and target is not None:
        _delete(st, dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        st["files"].pop(_key(src))
        st["files"][_key(dst)] = {"path": dst, "disk": str(target)}
        return
    data = _read(st, src)
    _delete(st, src)
    _delete(st, dst)
    _write(st, dst, data)


def _copy(st: dict[str, Any], src: str, dst: str) -> None:
    """Copy-Item: between mounted folders a file copy (a real disk never passes through
    memory), else through the state."""
    source, target = _disk_path(st, src), _disk_path(st, dst)
    if source is not None and target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        st["files"][_key(dst)] = {"path": dst, "disk": str(target)}
        return
    _write(st, dst, _read(st, src))


def _exists(st: dict[str, Any], path: str) -> bool:
    k = _key(path.rstrip("\\"))
    return (
        k in st["files"]
        or k in st["dirs"]
        or any(f.startswith(k + "\\") for f in st["files"])
        or any(d.startswith(k + "\\") for d in st["dirs"])
    )


def _count(st: dict[str, Any], what: str) -> None:
    st["counters"][what] = st["counters"].get(what, 0) + 1


def _result(code: int, facts: dict[str, str], message: str) -> dict[str, Any]:
    return {"exit": code, "facts": facts, "artifacts": [], "message": message}


def _s(p: Mapping[str, object], name: str) -> str:
    return str(p[name])


def _i(p: Mapping[str, object], name: str) -> int:
    value = p[name]
    if not isinstance(value, int | float | str):
        raise ScriptFailed(f"parameter {name} is not a number")
    return int(value)


def _jsonable(params: Mapping[str, object]) -> dict[str, object]:
    return dict(params)
