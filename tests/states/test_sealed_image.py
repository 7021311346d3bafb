"""The sealed-image contract: its data, and its two renderings (the guest's sh checks,
the offline Python checks) run on a real file tree, one leftover at a time: each is
named by both, and nothing else is."""

from __future__ import annotations

import glob as globmod
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from states import sealed_image
from states.sealed_image import BuildFacts, check_script, evaluate, items, seal_script

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sealed-image.md"
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


def clean_root(tmp: Path) -> Path:
    root = tmp / "root"
    for d in ("etc/ssh", "etc/sudoers.d", "root", "home/genie", "var/lib/cloud", "var/log/journal",
              "var/log/apt", "var/lib/dhcp", "var/lib/dbus", "var/lib/systemd", "tmp", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\ngenie:x:1000:1000::/home/genie:/bin/sh\n")
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


def _add_line(rel: str, line: str) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        with (root / rel).open("a") as f:
            f.write(line + "\n")
    return plant


# One way to leave each item behind. Every item of the contract must be here.
PLANTS: dict[str, Callable[[Path], None]] = {
    "ssh-authorized-keys": _w("home/genie/.ssh/authorized_keys", "ssh-ed25519 AAAA build\n"),
    "build-user-sudo": _w("etc/sudoers.d/gmi", f"{USER} ALL=(ALL) NOPASSWD:ALL\n"),
    "cloud-init-sudoers": _w("etc/sudoers.d/90-cloud-init-users", "# Created by cloud-init\nsomeone ALL=(ALL) ALL\n"),
    "usable-password": _add_line("etc/shadow", f"{USER}:$6$salt$hash:19000:0:99999:7:::"),
    "build-user": _add_line("etc/passwd", f"{USER}:x:1001:1001::/home/{USER}:/bin/bash"),
    "build-marker": _w("var/lib/gmi-fsm/build-user-created", ""),
    "ssh-host-keys": _w("etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
    "machine-id": _w("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
    "dbus-machine-id": lambda r: ((r / "var/lib/dbus/machine-id").unlink(),
                                  _w("var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")(r)),
    "random-seed": _w("var/lib/systemd/random-seed", "entropy"),
    "hostname": _w("etc/hostname", f"{HOSTNAME}\n"),
    "hosts-line": _add_line("etc/hosts", f"127.0.1.1 {HOSTNAME}.example {HOSTNAME}"),
    "journal": _w("var/log/journal/0123456789abcdef0123456789abcdef/system.journal"),
    "login-records": _w("var/log/wtmp", "record"),
    "package-logs": _w("var/log/dpkg.log", "install foo\n"),
    "cloud-init-logs": _w("var/log/cloud-init.log", "Adding user gmi\n"),
    "cloud-init-instance": _w("var/lib/cloud/instances/iid-build/obj.pkl"),
    "shell-histories": _w("root/.bash_history", "sudo cat /secret\n"),
    "dhcp-leases": _w("var/lib/dhcp/dhclient.eth0.leases", "lease {}\n"),
    "tmp-files": _w("var/tmp/build-scratch"),
}


def test_every_item_has_a_plant_and_a_doc_entry() -> None:
    ids = [it.id for it in items()]
    assert sorted(ids) == sorted(PLANTS)
    doc = DOCS.read_text()
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"docs/sealed-image.md does not list {missing}"


def test_docs_cover_every_default_virt_sysprep_operation() -> None:
    if shutil.which("virt-sysprep") is None:
        pytest.skip("virt-sysprep (libguestfs-tools) is not installed")
    out = subprocess.run(["virt-sysprep", "--list-operations"], capture_output=True, text=True, check=True).stdout
    defaults = [ln.split()[0] for ln in out.splitlines() if re.match(r"^\S+ \* ", ln)]
    doc = DOCS.read_text()
    assert defaults and not [op for op in defaults if f"`{op}`" not in doc]


def _sh_leftovers(root: Path, phase: sealed_image.Phase) -> dict[str, str]:
    proc = subprocess.run(
        ["sh", "-c", check_script(phase), "check", USER, HOSTNAME, "yes", str(root)],
        capture_output=True, text=True, check=True,
    )
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^leftover (\S+): (.*)$", line)
        if m:
            found[m.group(1)] = found.get(m.group(1), "") + m.group(2)
        else:
            assert line.startswith("ok "), line
    return found


def _py_leftovers(root: Path, phase: sealed_image.Phase) -> dict[str, str]:
    facts = BuildFacts(user=USER, hostname=HOSTNAME, remove_user=True)
    return {k: " ".join(v) for k, v in evaluate(LocalRoot(root), facts, phase).items() if v}


def test_a_clean_tree_passes_both_ways(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    for phase in sealed_image.PHASES:
        assert _sh_leftovers(root, phase) == {}
        assert _py_leftovers(root, phase) == {}


@pytest.mark.parametrize("item_id", sorted(PLANTS))
def test_each_leftover_alone_is_named_by_both_checks(tmp_path: Path, item_id: str) -> None:
    root = clean_root(tmp_path)
    PLANTS[item_id](root)
    for phase in ("seal", "offline"):
        item = next(it for it in items() if it.id == item_id)
        if phase not in item.phases:
            continue
        # D-Bus's id is a link to /etc/machine-id here: a set machine-id shows in both.
        expected = {item_id, "dbus-machine-id"} if item_id == "machine-id" else {item_id}
        assert set(_sh_leftovers(root, phase)) == expected, phase
        assert set(_py_leftovers(root, phase)) == expected, phase


def test_the_hosts_rule_at_boot_allows_the_clones_own_line(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    _add_line("etc/hosts", "127.0.1.1 gmi-check-abc123")(root)
    assert "hosts-line" not in _sh_leftovers(root, "boot")
    assert "hosts-line" in _sh_leftovers(root, "seal")


def test_the_seal_script_is_valid_sh_and_ends_access_last() -> None:
    script = seal_script()
    subprocess.run(["sh", "-n", "-c", script], check=True)
    # The build's access goes only after the rest was checked: a failed seal can be resumed.
    assert script.index("rm -rf /var/log/journal/*") < script.index('rm -rf "$d"') < script.index("poweroff")
    assert script.index("rm -f /etc/ssh/ssh_host_*") > script.index("exit 3")
