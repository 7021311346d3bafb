"""Build a small Debian base disk that boots under UEFI on a GPT disk.

Everything is done on files, without loop devices or mounts, so it also works in a
container: mmdebstrap writes a root directory, sfdisk partitions a sparse raw file,
``mkfs.vfat --offset`` + mtools fill the EFI system partition and
``mkfs.ext4 -E offset=... -d ROOTDIR`` writes the root filesystem in place.

The boot loader is a standalone GRUB (``grub-mkstandalone``, built on the host) at the
removable-media path ``\\EFI\\BOOT\\BOOTX64.EFI``: UEFI firmware (OVMF here, Hyper-V
Gen 2 in production) loads it without any NVRAM boot entry. Its embedded config finds
the root filesystem by LABEL and boots ``/vmlinuz`` + ``/initrd.img``; Debian keeps those
symlinks pointing at the newest kernel, so kernel upgrades inside the guest keep booting.
The kernel and initrd are also exported next to the disk for direct kernel boot.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.qemu._run import QemuToolError, require_tool, run_tool

__all__ = [
    "BASE_PACKAGES",
    "ROOT_LABEL",
    "BaseImage",
    "build_debian_base",
    "kernel_cmdline",
]

# Bump when the build recipe changes so cached images are rebuilt.
BUILDER_VERSION = "3"

ROOT_LABEL = "rootfs"
ESP_LABEL = "ESP"

# The packages measured in LAB.md: enough for cloud-init, SSH and systemd-networkd.
BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64",
    "locales",
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-resolved",
    "openssh-server",
    "sudo",
    "cloud-init",
    "initramfs-tools",
    "e2fsprogs",
    "iproute2",
    "netbase",
    "ca-certificates",
)

SECTOR = 512
# 1 MiB alignment for the first partition, as every partitioning tool does today.
ESP_START_SECTOR = 2048
ESP_SIZE_MIB = 64
# GPT keeps a backup header + table (33 sectors) at the end of the disk.
GPT_BACKUP_SECTORS = 33

_GPT_TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_GPT_TYPE_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def kernel_cmdline(extra: Sequence[str] = ()) -> str:
    """Kernel command line shared by the GRUB config and direct kernel boot.

    ``console=ttyS0`` last makes the serial port /dev/console, so the serial log shows
    the boot (qemu writes it to a file; Hyper-V exposes COM1 as a named pipe).
    """
    return " ".join([f"root=LABEL={ROOT_LABEL}", "ro", "console=tty0", "console=ttyS0,115200n8", *extra])


@dataclass(frozen=True, slots=True)
class BaseImage:
    """What :func:`build_debian_base` made. Paths are absolute."""

    disk: Path
    disk_format: str
    sha256: str
    kernel: Path
    initrd: Path
    kernel_cmdline: str
    suite: str
    user: str
    size_gib: int
    built_seconds: float
    metadata: Path

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> BaseImage:
        def path(key: str) -> Path:
            return Path(str(data[key]))

        return cls(
            disk=path("disk"),
            disk_format=str(data["disk_format"]),
            sha256=str(data["sha256"]),
            kernel=path("kernel"),
            initrd=path("initrd"),
            kernel_cmdline=str(data["kernel_cmdline"]),
            suite=str(data["suite"]),
            user=str(data["user"]),
            size_gib=int(str(data["size_gib"])),
            built_seconds=float(str(data["built_seconds"])),
            metadata=path("metadata"),
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _customize_script(user: str, authorized_key: str) -> str:
    """The mmdebstrap customize hook, run as ``sh SCRIPT "$1"`` with $1 = the root dir.

    Written as one script (not many --customize-hook strings) so quoting is done once,
    with shlex, for the only user-supplied values.
    """
    q_user = shlex.quote(user)
    q_key = shlex.quote(authorized_key.strip())
    return f"""#!/bin/sh
set -eu
root="$1"
user={q_user}
key={q_key}

# A sudo user with the caller's key: the only way in before cloud-init adds its own.
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo "$user"
install -d -m 700 "$root/home/$user/.ssh"
printf '%s\\n' "$key" > "$root/home/$user/.ssh/authorized_keys"
chmod 600 "$root/home/$user/.ssh/authorized_keys"
chroot "$root" chown -R "$user:$user" "/home/$user/.ssh"
printf '%s ALL=(ALL) NOPASSWD:ALL\\n' "$user" > "$root/etc/sudoers.d/90-gmi-$user"
chmod 440 "$root/etc/sudoers.d/90-gmi-$user"

# DHCP on whatever NIC appears: virtio (enp0s*) under qemu, eth0 under Hyper-V.
cat > "$root/etc/systemd/network/80-gmi-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
chroot "$root" systemctl enable systemd-networkd systemd-resolved ssh
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Only NoCloud (seed ISO) or nothing: probing cloud metadata URLs costs minutes offline.
printf 'datasource_list: [ NoCloud, None ]\\n' \\
    > "$root/etc/cloud/cloud.cfg.d/90-gmi-datasources.cfg"

# cloud-init ends in "status: error" when the locale it sets is not generated.
printf 'en_US.UTF-8 UTF-8\\n' > "$root/etc/locale.gen"
chroot "$root" locale-gen
printf 'LANG=en_US.UTF-8\\n' > "$root/etc/default/locale"

install -d "$root/boot/efi"
printf 'debian\\n' > "$root/etc/hostname"

# For a later in-guest grub-install/update-grub: keep the serial console.
install -d "$root/etc/default/grub.d"
cat > "$root/etc/default/grub.d/90-gmi-console.cfg" <<'EOF'
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
EOF

# Every clone must get its own SSH host keys: drop the build's keys and let sshd make
# missing ones at start (cloud-init also regenerates them for a new instance-id).
rm -f "$root"/etc/ssh/ssh_host_*
install -d "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/90-gmi-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
"""


def _fstab_script() -> str:
    """The mmdebstrap essential hook: write /etc/fstab before the kernel is installed.

    initramfs-tools only puts fsck into the initrd when fstab names the root
    filesystem at the time the initrd is built (else: "fsck not present").
    """
    return f"""#!/bin/sh
set -eu
root="$1"
# Mount by label: the same disk boots as /dev/vda (virtio) and /dev/sda (Hyper-V SCSI).
# nofail on the ESP: a missing vfat must not drop the boot into emergency mode.
cat > "$root/etc/fstab" <<'EOF'
LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1
LABEL={ESP_LABEL} /boot/efi vfat umask=0077,nofail 0 2
EOF
# The fsck hook ignores fstab's type for "/" and probes the device, which does not
# exist in a chroot; naming the type makes it include fsck.ext4 anyway.
install -d "$root/etc/initramfs-tools/conf.d"
printf 'FSTYPE=ext4\\n' > "$root/etc/initramfs-tools/conf.d/90-gmi-fstype.conf"
"""


def _grub_config() -> str:
    """Embedded config of the standalone GRUB: find root by label, boot the symlinks."""
    return f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
# Without a video driver "linux" prints "no suitable video mode found" under UEFI.
insmod all_video
search --no-floppy --label {ROOT_LABEL} --set=root
linux /vmlinuz {kernel_cmdline()}
initrd /initrd.img
boot
"""


def _run_mmdebstrap(
    rootdir: Path,
    *,
    suite: str,
    packages: Sequence[str],
    hook: Path,
    essential_hook: Path,
    log: Path,
    mode: str,
    mirrors: Sequence[str],
) -> None:
    argv = [
        require_tool("mmdebstrap"),
        "--variant=apt",
        f"--mode={mode}",
        "--include=" + ",".join(packages),
        f'--essential-hook=sh {shlex.quote(str(essential_hook))} "$1"',
        f'--customize-hook=sh {shlex.quote(str(hook))} "$1"',
        suite,
        str(rootdir),
        *mirrors,
    ]
    # mmdebstrap talks a lot; the log file is kept next to the image for diagnosis.
    with log.open("w") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise QemuToolError(
            f"mmdebstrap failed (exit {proc.returncode}) building Debian {suite}",
            where=str(log),
            hint="check that apt can reach the Debian mirror (apt-get update) and that "
            "this process may chroot (root) or use --mode=unshare in a container",
            output=tail,
        )


def _partition(raw: Path, size_bytes: int) -> tuple[int, int]:
    """Write a GPT with an ESP and a root partition; return root (offset, size) in bytes."""
    total_sectors = size_bytes // SECTOR
    esp_sectors = ESP_SIZE_MIB * 1024 * 1024 // SECTOR
    root_start = ESP_START_SECTOR + esp_sectors
    # End the root partition on a 1 MiB boundary before the GPT backup.
    root_end = (total_sectors - GPT_BACKUP_SECTORS) // 2048 * 2048
    root_sectors = root_end - root_start
    script = (
        "label: gpt\n"
        f'start={ESP_START_SECTOR}, size={esp_sectors}, type={_GPT_TYPE_ESP}, name="EFI"\n'
        f'start={root_start}, size={root_sectors}, type={_GPT_TYPE_LINUX}, name="{ROOT_LABEL}"\n'
    )
    run_tool(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
        what="partitioning the base disk",
        where=raw,
        input_text=script,
    )
    return root_start * SECTOR, root_sectors * SECTOR


def _make_esp(raw: Path, efi_binary: Path) -> None:
    esp_kib = ESP_SIZE_MIB * 1024
    run_tool(
        [
            # Explicit 512-byte sectors and 1-sector clusters: otherwise mkfs.fat sizes
            # clusters from the whole file (GiBs), leaving too few clusters for FAT32
            # and mtools then misreads the filesystem ("No directory slots").
            "mkfs.vfat",
            "-F",
            "32",
            "-S",
            "512",
            "-s",
            "1",
            "-n",
            ESP_LABEL,
            "--offset",
            str(ESP_START_SECTOR),
            str(raw),
            str(esp_kib),
        ],
        what="formatting the EFI system partition",
        where=raw,
    )
    image = f"{raw}@@{ESP_START_SECTOR * SECTOR}"
    # mtools checks geometry against a floppy model; a partition in a file fails that.
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run_tool(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], what="creating \\EFI\\BOOT", where=raw, env=env)
    run_tool(
        ["mcopy", "-i", image, str(efi_binary), "::/EFI/BOOT/BOOTX64.EFI"],
        what="copying BOOTX64.EFI to the ESP",
        where=raw,
        env=env,
    )


def _make_grub_efi(workdir: Path) -> Path:
    cfg = workdir / "grub-embedded.cfg"
    cfg.write_text(_grub_config())
    out = workdir / "BOOTX64.EFI"
    modules_dir = Path("/usr/lib/grub/x86_64-efi")
    if not modules_dir.is_dir():
        raise QemuToolError(
            "GRUB x86_64-efi modules not found",
            where=str(modules_dir),
            hint="apt-get install -y --no-install-recommends grub-efi-amd64-bin",
        )
    run_tool(
        [
            "grub-mkstandalone",
            "--format=x86_64-efi",
            f"--output={out}",
            # Preloaded so the embedded config needs no module loading from disk.
            "--modules=part_gpt part_msdos fat ext2 search search_label linux normal "
            "serial terminal echo test",
            "--locales=",
            "--fonts=",
            "--themes=",
            f"boot/grub/grub.cfg={cfg}",
        ],
        what="building the standalone GRUB EFI binary",
        where=out,
    )
    return out


def _make_root_fs(raw: Path, rootdir: Path, offset: int, size: int) -> None:
    run_tool(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            ROOT_LABEL,
            "-E",
            f"offset={offset}",
            "-d",
            str(rootdir),
            str(raw),
            f"{size // 1024}k",
        ],
        what="writing the root filesystem",
        where=raw,
        hint="needs e2fsprogs >= 1.43 (mkfs.ext4 -d)",
    )


def _resolve_boot_file(rootdir: Path, name: str) -> Path:
    """Follow /vmlinuz-style symlinks inside ``rootdir`` (they may be absolute)."""
    link = rootdir / name
    target = link.readlink() if link.is_symlink() else Path(name)
    path = rootdir / str(target).lstrip("/")
    if not path.is_file():
        raise QemuToolError(
            f"{name} not found in the built root",
            where=str(link),
            hint="the kernel package (linux-image-cloud-amd64) did not install",
        )
    return path


def build_debian_base(
    out_dir: Path,
    *,
    user: str,
    authorized_key: str,
    suite: str = "bookworm",
    size_gib: int = 3,
    packages: Sequence[str] = BASE_PACKAGES,
    mode: str = "auto",
    mirrors: Sequence[str] = (),
    disk_format: str = "qcow2",
    progress: Callable[[str], None] | None = None,
) -> BaseImage:
    """Build a UEFI-bootable Debian base disk in ``out_dir`` (created if missing).

    Produces ``base.<qcow2|raw>``, ``vmlinuz``, ``initrd.img``, ``base.json`` (the
    returned :class:`BaseImage`) and ``mmdebstrap.log``. Runs as root (or with
    ``mode="unshare"`` where user namespaces are allowed); needs no loop devices.
    """
    if disk_format not in ("qcow2", "raw"):
        raise ValueError(f"disk_format must be qcow2 or raw, not {disk_format!r}")
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gmi-base-", dir=out_dir) as tmp:
        work = Path(tmp)
        rootdir = work / "root"
        hook = work / "customize.sh"
        hook.write_text(_customize_script(user, authorized_key))
        essential_hook = work / "essential.sh"
        essential_hook.write_text(_fstab_script())

        say(f"mmdebstrap {suite} ({len(packages)} packages)")
        _run_mmdebstrap(
            rootdir,
            suite=suite,
            packages=packages,
            hook=hook,
            essential_hook=essential_hook,
            log=out_dir / "mmdebstrap.log",
            mode=mode,
            mirrors=mirrors,
        )
        kernel = out_dir / "vmlinuz"
        initrd = out_dir / "initrd.img"
        shutil.copyfile(_resolve_boot_file(rootdir, "vmlinuz"), kernel)
        shutil.copyfile(_resolve_boot_file(rootdir, "initrd.img"), initrd)

        say("building BOOTX64.EFI")
        efi = _make_grub_efi(work)

        say(f"partitioning a {size_gib} GiB GPT disk")
        raw = work / "disk.raw"
        size_bytes = size_gib * 1024**3
        with raw.open("wb") as fh:
            fh.truncate(size_bytes)  # sparse: only written blocks take space
        root_offset, root_size = _partition(raw, size_bytes)
        _make_esp(raw, efi)
        say("writing the root filesystem")
        _make_root_fs(raw, rootdir, root_offset, root_size)
        if raw.stat().st_size != size_bytes:
            raise QemuToolError("mkfs changed the disk file's size", where=str(raw))

        disk = out_dir / f"base.{disk_format}"
        if disk_format == "qcow2":
            say("converting to qcow2")
            run_tool(
                ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)],
                what="converting the base disk to qcow2",
                where=disk,
            )
        else:
            raw.replace(disk)
        # The root tree is root-owned and large; the TemporaryDirectory removes it.

    say("hashing")
    meta = out_dir / "base.json"
    image = BaseImage(
        disk=disk,
        disk_format=disk_format,
        sha256=sha256_file(disk),
        kernel=kernel,
        initrd=initrd,
        kernel_cmdline=kernel_cmdline(),
        suite=suite,
        user=user,
        size_gib=size_gib,
        built_seconds=round(time.monotonic() - started, 1),
        metadata=meta,
    )
    meta.write_text(json.dumps(image.to_json(), indent=2) + "\n")
    return image
