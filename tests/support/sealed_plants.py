"""A guest file tree that passes the sealed-image contract, and one way to leave each
item of it behind (tests of the seal's sh checks, the offline checks, --inspect)."""

from __future__ import annotations

import glob as globmod
import os
from collections.abc import Callable
from pathlib import Path

USER, HOSTNAME = "gmi", "gmi-build"


class LocalRoot:
    """``sealed_image.Files`` over a folder standing for a guest's /."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def glob(self, pattern: str) -> list[str]:
        hits = globmod.glob(str(self.root) + pattern)
        return sorted("/" + os.path.relpath(h, self.root) for h in hits if os.path.lexists(h))

    def size(self, path: str) -> int | None:
        p = self.root / path.lstrip("/")
        return p.stat().st_size if p.is_file() else None

    def read(self, path: str) -> str | None:
        p = self.root / path.lstrip("/")
        return p.read_text() if p.is_file() else None


def clean_root(tmp: Path, name: str = "root") -> Path:
    root = tmp / name
    for d in (
        "etc/ssh",
        "etc/sudoers.d",
        "root",
        "home/genie",
        "var/lib/cloud",
        "var/log/journal",
        "var/log/apt",
        "var/lib/dhcp",
        "var/lib/dbus",
        "var/lib/systemd",
        "tmp",
        "var/tmp",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\ngenie:x:1000:1000::/home/genie:/bin/sh\n"
    )
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ngenie:!:19000:0:99999:7:::\n")
    (root / "etc/sudoers").write_text("# gmi is mentioned only in a comment\nroot ALL=(ALL:ALL) ALL\n")
    (root / "etc/sudoers.d/README").write_text("# files here: e.g. gmi ALL=(ALL) ALL\n")
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").symlink_to("../../../etc/machine-id")
    return root


def _w(rel: str, text: str = "x\n") -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    return plant


def add_line(rel: str, line: str) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        with (root / rel).open("a") as f:
            f.write(line + "\n")

    return plant


# One way to leave each item behind. Every item of the contract must be here.
PLANTS: dict[str, Callable[[Path], None]] = {
    "ssh-authorized-keys": _w("home/genie/.ssh/authorized_keys", "ssh-ed25519 AAAA build\n"),
    "build-user-sudo": _w("etc/sudoers.d/gmi", f"{USER} ALL=(ALL) NOPASSWD:ALL\n"),
    "cloud-init-sudoers": _w(
        "etc/sudoers.d/90-cloud-init-users", "# Created by cloud-init\nsomeone ALL=(ALL) ALL\n"
    ),
    "usable-password": add_line("etc/shadow", f"{USER}:$6$salt$hash:19000:0:99999:7:::"),
    "build-user": add_line("etc/passwd", f"{USER}:x:1001:1001::/home/{USER}:/bin/bash"),
    "passwd-backups": _w("etc/shadow-", f"{USER}:$6$salt$hash:19000:0:99999:7:::\n"),
    "system-logs": _w("var/log/auth.log", "sshd: Accepted publickey for gmi from 10.0.2.2\n"),
    "build-marker": _w("var/lib/gmi-fsm/build-user-created", ""),
    "ssh-host-keys": _w("etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
    "machine-id": _w("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
    "dbus-machine-id": lambda r: (
        (r / "var/lib/dbus/machine-id").unlink(),
        _w("var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")(r),
    ),
    "random-seed": _w("var/lib/systemd/random-seed", "entropy"),
    "hostname": _w("etc/hostname", f"{HOSTNAME}\n"),
    "hosts-line": add_line("etc/hosts", f"127.0.1.1 {HOSTNAME}.example {HOSTNAME}"),
    "journal": _w("var/log/journal/0123456789abcdef0123456789abcdef/system.journal"),
    "login-records": _w("var/log/wtmp", "record"),
    "package-logs": _w("var/log/dpkg.log", "install foo\n"),
    "cloud-init-logs": _w("var/log/cloud-init.log", "Adding user gmi\n"),
    "cloud-init-instance": _w("var/lib/cloud/instances/iid-build/obj.pkl"),
    "shell-histories": _w("root/.bash_history", "sudo cat /secret\n"),
    "dhcp-leases": _w("var/lib/dhcp/dhclient.eth0.leases", "lease {}\n"),
    "tmp-files": _w("var/tmp/build-scratch"),
}
