"""A Packer 1.6.6 JSON template that runs the SAME guest scripts as a gmi-fsm spec.

Used by bench/bench_vs_packer.py. Packer's qemu builder boots a copy of the base
disk (``disk_image: true``, ``use_backing_file: false``) with the same firmware (OVMF
CODE/VARS as pflash), machine (q35), accelerator (TCG, ``-cpu max``), memory, CPUs,
virtio disk/net/rng, and the same NoCloud seed ISO as gmi-fsm's build VM. Because
``qemuargs`` names ``-drive`` and ``-device``, Packer drops its default drive and
network device, so every drive and device is listed here explicitly.

Each guest step of the spec (``orchestrator.guest.guest_steps``: stages install_os,
update, cloud_init, hyperv_integration, cleanup) becomes one ``shell`` provisioner
running the step's script file with the step's arguments (``sudo -n sh FILE ARGS``,
or ``sh FILE ARGS`` for the steps gmi-fsm runs without sudo). The seal step
(``seal-and-power-off``) is Packer's ``shutdown_command``, sent exactly as gmi-fsm
sends it (``sudo -n -- sh -c SCRIPT gmi ARGS``). Packer's own qcow2 compaction is
skipped: the VHDX conversion done after Packer returns is the compaction, as in
gmi-fsm's compact stage.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

GUEST_STAGES = ("install_os", "update", "cloud_init", "hyperv_integration", "cleanup")


def write_template(
    *,
    spec_path: Path,
    work: Path,
    base_image: Path,
    key: Path,
    seed_iso: Path,
    ovmf_code: Path,
    ovmf_vars: Path,
) -> Path:
    """Render the spec's guest steps to files under ``work`` and write ``work/template.json``."""
    from orchestrator.guest import guest_steps
    from orchestrator.spec import load_spec

    spec, _ = load_spec(spec_path)
    assert spec.guest is not None and spec.host.kind == "qemu"
    scripts = work / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    provisioners: list[dict[str, Any]] = []
    for stage in GUEST_STAGES:
        for step in guest_steps(spec, stage):
            path = scripts / f"{len(provisioners):02d}-{stage}-{step.name}.sh"
            path.write_text(step.command.text + "\n")
            args = " ".join(shlex.quote(a) for a in step.command.args)
            runner = "sudo -n sh" if step.command.sudo else "sh"
            provisioners.append(
                {
                    "type": "shell",
                    "script": str(path),
                    "execute_command": f"{runner} '{{{{ .Path }}}}' {args}".rstrip(),
                }
            )
    (seal,) = guest_steps(spec, "seal")
    shutdown = " ".join(
        shlex.quote(p) for p in ["sudo", "-n", "--", "sh", "-c", seal.command.text, "gmi", *seal.command.args]
    )
    out_dir = work / "output"
    disk = out_dir / "disk.qcow2"
    template = {
        "builders": [
            {
                "type": "qemu",
                "vm_name": disk.name,
                "output_directory": str(out_dir),
                "format": "qcow2",
                "disk_image": True,
                "use_backing_file": False,
                "skip_resize_disk": True,
                "skip_compaction": True,
                "iso_url": str(base_image),
                "iso_checksum": "none",
                "accelerator": "tcg",
                "machine_type": "q35",
                "memory": spec.host.memory_mib,
                "cpus": spec.host.cpus,
                "headless": True,
                "boot_wait": "0s",
                "communicator": "ssh",
                "ssh_username": spec.guest.user,
                "ssh_private_key_file": str(key),
                "ssh_timeout": "20m",
                "shutdown_command": shutdown,
                "shutdown_timeout": "10m",
                "qemuargs": [
                    ["-cpu", "max"],
                    ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf_code}"],
                    ["-drive", f"if=pflash,format=raw,unit=1,file={ovmf_vars}"],
                    ["-drive", f"file={disk},format=qcow2,if=virtio,discard=unmap"],
                    ["-drive", f"file={seed_iso},format=raw,if=virtio,readonly=on"],
                    ["-device", "virtio-rng-pci"],
                    ["-device", "virtio-net-pci,netdev=user.0"],
                    ["-serial", f"file:{work / 'console.log'}"],
                ],
            }
        ],
        "provisioners": provisioners,
    }
    path = work / "template.json"
    path.write_text(json.dumps(template, indent=2) + "\n")
    return path
