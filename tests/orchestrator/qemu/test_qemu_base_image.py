"""The disk-layout steps of the base image build, on real files (no mmdebstrap)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator.qemu.base_image import (
    ESP_SIZE_MIB,
    ROOT_LABEL,
    _customize_script,
    _grub_config,
    _make_esp,
    _make_root_fs,
    _partition,
    kernel_cmdline,
)

MIB = 1024 * 1024


def test_gpt_esp_and_root_without_loop_devices(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    size = 256 * MIB
    with raw.open("wb") as fh:
        fh.truncate(size)
    root_off, root_size = _partition(raw, size)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert esp["start"] == 2048
    assert esp["size"] * 512 == ESP_SIZE_MIB * MIB
    assert root["start"] * 512 == root_off
    assert root["size"] * 512 == root_size
    assert root_off % MIB == 0

    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(b"MZ fake loader")
    _make_esp(raw, efi)
    listing = subprocess.run(["mdir", "-b", "-i", f"{raw}@@{2048 * 512}", "::/EFI/BOOT"],
                             capture_output=True, text=True, check=True,
                             env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert "BOOTX64.EFI" in listing

    rootdir = tmp_path / "root"
    (rootdir / "etc").mkdir(parents=True)
    (rootdir / "etc" / "hostname").write_text("debian\n")
    _make_root_fs(raw, rootdir, root_off, root_size)
    assert raw.stat().st_size == size
    # The ext4 filesystem sits at the partition's offset and carries the label.
    probe = subprocess.run(["blkid", "-p", "-O", str(root_off), "-o", "export", str(raw)],
                           capture_output=True, text=True, check=True).stdout
    assert f"LABEL={ROOT_LABEL}" in probe
    assert "TYPE=ext4" in probe
    # The ESP is still intact after writing the root filesystem.
    subprocess.run(["mdir", "-i", f"{raw}@@{2048 * 512}", "::/EFI/BOOT/BOOTX64.EFI"],
                   check=True, capture_output=True, env={"MTOOLS_SKIP_CHECK": "1"})


def test_grub_config_boots_by_label_with_serial_console() -> None:
    cfg = _grub_config()
    assert f"search --no-floppy --label {ROOT_LABEL} --set=root" in cfg
    assert "linux /vmlinuz " in cfg
    assert "initrd /initrd.img" in cfg
    assert "console=ttyS0" in kernel_cmdline()
    assert f"root=LABEL={ROOT_LABEL}" in kernel_cmdline()


def test_customize_script_quotes_inputs_and_is_valid_sh(tmp_path: Path) -> None:
    script = _customize_script("gmi", "ssh-ed25519 AAAA key'with$quote")
    assert "user=gmi" in script
    assert "NOPASSWD:ALL" in script
    assert "datasource_list: [ NoCloud, None ]" in script
    assert "locale-gen" in script
    path = tmp_path / "c.sh"
    path.write_text(script)
    subprocess.run(["sh", "-n", str(path)], check=True)
