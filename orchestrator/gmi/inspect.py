"""``validate --inspect`` and the validate stage: look inside the disk offline, with
libguestfs, for what the sealed-image contract (``states/sealed_image.yaml``) says a
GMI must not carry of its build: its access, its identity, its history.

The tools run with ``LIBGUESTFS_BACKEND=direct`` (no libvirt daemon needed) and, on a
machine without /dev/kvm, ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``: the appliance
then boots in software emulation (about 10-20 s). One appliance is started per disk
(``guestfish --listen``) and queried with ``guestfish --remote``.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from orchestrator.gmi.archive import Scan
from orchestrator.gmi.hashing import CHUNK
from orchestrator.gmi.naming import GmiNames
from orchestrator.gmi.report import Check, check, failed, passed, skipped
from states import sealed_image
from states.sealed_image import BuildFacts

CALL_TIMEOUT_S = 600.0
LINUX_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs"}

APT_PACKAGES = ("libguestfs-tools", "linux-image-cloud-amd64")
"""What Debian needs for --inspect: the tools and a kernel for the appliance."""


USER_RULES = ("no_user_line", "no_build_user")
"""Rules that check nothing without the build user's name."""


def contract_checks(
    found: Mapping[str, list[str]], prefix: str = "inspect", facts: BuildFacts | None = None
) -> list[Check]:
    """One check per contract item, from its leftovers (pure: tested without libguestfs).
    Without the build user (``facts``), the items that need it are skipped, not passed."""
    items = {it.id: it for it in sealed_image.items()}
    unknown_user = facts is not None and not facts.user
    out = []
    for item_id, left in found.items():
        what = items[item_id].what
        if unknown_user and items[item_id].rule in USER_RULES:
            out.append(skipped(f"{prefix}.{item_id}", f"not checked, the build user is not known: {what}"))
            continue
        out.append(
            check(
                f"{prefix}.{item_id}",
                not left,
                f"none left: {what}",
                f"left in the image: {what}: {'; '.join(left)}",
            )
        )
    return out


def build_facts_check(facts: BuildFacts) -> Check:
    if facts.user:
        return passed(
            "inspect.build_facts",
            f"build user {facts.user!r} ({'removed at seal' if facts.remove_user else 'kept, locked'})"
            + (f", build hostname {facts.hostname!r}" if facts.hostname else ""),
        )
    return skipped(
        "inspect.build_facts",
        "the sidecar does not name the build user: its sudo rule, password and removal were not checked",
    )


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
            # Not ok_fail: an unmounted /var or /home would be read as an empty, clean folder.
            g.call("mount-ro", dev, mp)
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


class GuestfishFiles:
    """:class:`states.sealed_image.Files` over a mounted appliance. Links are resolved
    here, inside the guest's tree: libguestfs would follow an absolute link into the
    appliance's own root."""

    def __init__(self, g: Guestfish) -> None:
        self.g = g

    def glob(self, pattern: str) -> list[str]:
        return self.g.lines("glob-expand", pattern)

    def _resolve(self, path: str) -> str | None:
        for _ in range(8):
            if self.g.call("is-symlink", path, ok_fail=True).strip() != "true":
                return path if self.g.call("is-file", path, ok_fail=True).strip() == "true" else None
            target = self.g.call("readlink", path).strip()
            path = posixpath.normpath(
                target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
            )
        return None

    def size(self, path: str) -> int | None:
        real = self._resolve(path)
        return None if real is None else int(self.g.call("filesize", real).strip() or 0)

    def read(self, path: str) -> str | None:
        real = self._resolve(path)
        return None if real is None else self.g.call("cat", real)


def inspect_disk(disk: Path, facts: BuildFacts | None = None) -> list[Check]:
    facts = facts or BuildFacts()
    g = Guestfish(disk)
    try:
        g.start()
        mounted = _mount_root(g)
        found = sealed_image.evaluate(GuestfishFiles(g), facts, "offline")
    except (GuestfishError, subprocess.TimeoutExpired, ValueError) as exc:
        return [failed("inspect.disk", f"could not look inside {disk.name}: {exc}")]
    finally:
        g.close()
    return [
        check("inspect.disk", True, f"mounted read-only: {mounted}", ""),
        build_facts_check(facts),
        *contract_checks(found, facts=facts),
    ]


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
    sc: Scan,
    names: GmiNames,
    inspector: Callable[[Path], list[Check]] | None = None,
    facts: BuildFacts | None = None,
) -> list[Check]:
    if names.disk_entry not in sc.files:
        return [failed("inspect.disk", f"no {names.disk_entry} to inspect")]
    if inspector is None:
        reason = unavailable_reason()
        if reason:
            return [failed("inspect.available", reason)]
        inspector = functools.partial(inspect_disk, facts=facts)
    with disk_on_disk(sc, names) as disk:
        return inspector(disk)
