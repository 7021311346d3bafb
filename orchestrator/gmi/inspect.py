"""``validate --inspect``: look inside the disk offline, with libguestfs, for what a
sealed GMI must not carry (SSH host keys, a machine-id, shell histories, cloud-init
instance data, an unvacuumed journal).

The tools run with ``LIBGUESTFS_BACKEND=direct`` (no libvirt daemon needed) and, on a
machine without /dev/kvm, ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``: the appliance
then boots in software emulation (about 10-20 s). One appliance is started per disk
(``guestfish --listen``) and queried with ``guestfish --remote``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.gmi.archive import Scan
from orchestrator.gmi.hashing import CHUNK
from orchestrator.gmi.naming import GmiNames
from orchestrator.gmi.report import Check, check, failed

JOURNAL_LIMIT_KIB = 16 * 1024  # journald preallocates 8 MiB files; a vacuumed journal is below this
CALL_TIMEOUT_S = 600.0
LINUX_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs"}

APT_PACKAGES = ("libguestfs-tools", "linux-image-cloud-amd64")
"""What Debian needs for --inspect: the tools and a kernel for the appliance."""


@dataclass(slots=True)
class Leftovers:
    """What the disk holds at the paths a sealed image must have cleared."""

    host_keys: list[str] = field(default_factory=list)
    machine_id: str | None = None  # None: the file is absent
    histories: list[str] = field(default_factory=list)
    cloud_instance: list[str] = field(default_factory=list)
    journal_kib: int | None = None  # None: no /var/log/journal


def leftover_checks(found: Leftovers) -> list[Check]:
    """Decide each check from what was found (pure: tested without libguestfs)."""
    mid = found.machine_id
    mid_ok = mid is None or mid.strip() in ("", "uninitialized")
    return [
        check(
            "inspect.ssh_host_keys",
            not found.host_keys,
            "no /etc/ssh/ssh_host_* (each clone makes its own on first boot)",
            f"SSH host keys left in the image (every clone would share them): {', '.join(found.host_keys)}",
        ),
        check(
            "inspect.machine_id",
            mid_ok,
            "/etc/machine-id " + ("absent" if mid is None else "empty"),
            f"/etc/machine-id is set ({(mid or '').strip()[:40]}): "
            "clones would share it and get one DHCP lease",
        ),
        check(
            "inspect.shell_history",
            not found.histories,
            "no shell histories",
            f"shell histories left: {', '.join(found.histories)}",
        ),
        check(
            "inspect.cloud_init_instance",
            not found.cloud_instance,
            "no cloud-init instance data (first boot runs cloud-init afresh)",
            "cloud-init instance data left (run `cloud-init clean --logs`): "
            + ", ".join(found.cloud_instance),
        ),
        check(
            "inspect.journal",
            found.journal_kib is None or found.journal_kib <= JOURNAL_LIMIT_KIB,
            "journal " + ("absent" if found.journal_kib is None else f"{found.journal_kib} KiB (vacuumed)"),
            f"/var/log/journal holds {found.journal_kib} KiB (over {JOURNAL_LIMIT_KIB}): not vacuumed",
        ),
    ]


def guestfs_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    # The same rule as our own VMs: a /dev/kvm node alone proves nothing (nested hosts
    # expose one that aborts qemu), so KVM only with a vmx/svm flag, else TCG.
    from orchestrator.qemu.accel import choose_accel  # noqa: PLC0415

    if choose_accel().kind == "tcg":
        env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    return env


def unavailable_reason() -> str:
    """Why --inspect cannot run here, or "" when it can."""
    if shutil.which("guestfish") is None:
        return (
            "libguestfs is not installed (no `guestfish` on PATH): the disk was NOT inspected; "
            f"install it with `apt-get install --no-install-recommends {' '.join(APT_PACKAGES)}`"
        )
    return ""


class GuestfishError(Exception):
    pass


class Guestfish:
    """One read-only libguestfs appliance for ``disk``, driven by remote commands."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        self.env = guestfs_env()
        self.pid = 0
        # The server reports a failed command on its own stderr, not the client's.
        self.server_log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()

    def server_errors(self) -> str:
        self.server_log.seek(0)
        lines = [
            ln for ln in self.server_log.read().splitlines() if ln.startswith(("libguestfs: error", "qemu"))
        ]
        return " | ".join(lines[-3:])

    def start(self) -> None:
        # Name the format: libguestfs refuses to guess it for a disk it did not make.
        fmt = ["--format=vhdx"] if self.disk.suffix.lower() == ".vhdx" else ["--format=raw"]
        # Output to files, not pipes: the forked server keeps them open, and waiting for
        # a pipe's end would wait for the server to exit.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                ["guestfish", "--listen", "--ro", *fmt, "-a", str(self.disk)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=self.server_log,
                timeout=CALL_TIMEOUT_S,
                check=False,
            )
            out.seek(0)
            stdout = out.read()
        stderr = self.server_errors()
        m = re.search(r"GUESTFISH_PID=(\d+)", stdout)
        if proc.returncode != 0 or m is None:
            raise GuestfishError(f"guestfish --listen failed: {stderr.strip() or stdout.strip()}")
        self.pid = int(m.group(1))
        # The forked server creates its socket after the parent has printed its pid:
        # wait for it to answer a no-op before launching the appliance.
        deadline = time.monotonic() + 30
        while not self.call("get-verbose", ok_fail=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.call("run")

    def call(self, *args: str, ok_fail: bool = False) -> str:
        proc = subprocess.run(
            ["guestfish", f"--remote={self.pid}", "--", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0 and not ok_fail:
            raise GuestfishError(f"guestfish {' '.join(args)}: {proc.stderr.strip()} {self.server_errors()}")
        return proc.stdout if proc.returncode == 0 else ""

    def lines(self, *args: str) -> list[str]:
        return [ln for ln in self.call(*args).splitlines() if ln.strip()]

    def close(self) -> None:
        if self.pid:
            self.call("exit", ok_fail=True)
            self.pid = 0
        self.server_log.close()


def _mount_root(g: Guestfish) -> str:
    """Mount the guest's filesystems read-only; return what was mounted. Uses
    libguestfs's OS inspection, else the first Linux filesystem holding /etc."""
    roots = g.lines("inspect-os")
    if roots:
        pairs = [ln.split(": ", 1) for ln in g.lines("inspect-get-mountpoints", roots[0])]
        for mp, dev in sorted((p for p in pairs if len(p) == 2), key=lambda p: len(p[0])):
            g.call("mount-ro", dev, mp, ok_fail=True)
        return f"OS root {roots[0]}"
    for line in g.lines("list-filesystems"):
        dev, _, fstype = line.partition(": ")
        if fstype.strip() not in LINUX_FS:
            continue
        g.call("mount-ro", dev, "/")
        if g.call("is-dir", "/etc").strip() == "true":
            return f"{dev} ({fstype.strip()})"
        g.call("umount", "/")
    raise GuestfishError("no Linux filesystem with /etc found on the disk")


def gather(g: Guestfish) -> Leftovers:
    found = Leftovers()
    found.host_keys = g.lines("glob-expand", "/etc/ssh/ssh_host_*")
    if g.call("is-file", "/etc/machine-id").strip() == "true":
        found.machine_id = g.call("cat", "/etc/machine-id")
    for pattern in (
        "/root/.bash_history",
        "/home/*/.bash_history",
        "/root/.zsh_history",
        "/home/*/.zsh_history",
    ):
        found.histories += g.lines("glob-expand", pattern)
    found.cloud_instance = g.lines("glob-expand", "/var/lib/cloud/instances/*") + g.lines(
        "glob-expand", "/var/lib/cloud/instance"
    )
    if g.call("is-dir", "/var/log/journal").strip() == "true":
        found.journal_kib = int(g.call("du", "/var/log/journal").strip() or 0)
    return found


def inspect_disk(disk: Path) -> list[Check]:
    g = Guestfish(disk)
    try:
        g.start()
        mounted = _mount_root(g)
        checks = leftover_checks(gather(g))
    except (GuestfishError, subprocess.TimeoutExpired, ValueError) as exc:
        return [failed("inspect.disk", f"could not look inside {disk.name}: {exc}")]
    finally:
        g.close()
    return [check("inspect.disk", True, f"mounted read-only: {mounted}", ""), *checks]


@contextmanager
def disk_on_disk(sc: Scan, names: GmiNames) -> Iterator[Path]:
    """The VHDX as a file libguestfs can open: in place for a folder, else extracted
    (streamed) into a temporary folder, removed afterwards. Needs free space for the
    disk ($TMPDIR)."""
    if sc.kind == "folder":
        yield sc.path / names.disk_entry
        return
    with tempfile.TemporaryDirectory(prefix="gmi-inspect-") as tmp:
        dest = Path(tmp) / "disk.vhdx"
        with dest.open("wb") as out:
            if sc.kind == "zip":
                with zipfile.ZipFile(sc.path) as zf, zf.open(names.disk_entry) as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
            else:
                with tarfile.open(sc.path, "r|gz") as tf:
                    for info in tf:
                        if info.name.rstrip("/") == names.disk_entry:
                            src_f = tf.extractfile(info)
                            while src_f is not None and (chunk := src_f.read(CHUNK)):
                                out.write(chunk)
                            break
        yield dest


def inspect_package(
    sc: Scan, names: GmiNames, inspector: Callable[[Path], list[Check]] | None = None
) -> list[Check]:
    if names.disk_entry not in sc.files:
        return [failed("inspect.disk", f"no {names.disk_entry} to inspect")]
    if inspector is None:
        reason = unavailable_reason()
        if reason:
            return [failed("inspect.available", reason)]
        inspector = inspect_disk
    with disk_on_disk(sc, names) as disk:
        return inspector(disk)
