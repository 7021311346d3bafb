"""The sealed-image contract: its data, and its two renderings (the guest's sh checks,
the offline Python checks) run on a real file tree, one leftover at a time: each is
named by both, and nothing else is."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from states import sealed_image
from states.sealed_image import BuildFacts, check_script, evaluate, items, seal_script
from tests.support.sealed_plants import HOSTNAME, PLANTS, USER, LocalRoot, add_line, clean_root

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sealed-image.md"


def test_every_item_has_a_plant_and_a_doc_entry() -> None:
    ids = [it.id for it in items()]
    assert sorted(ids) == sorted(PLANTS)
    doc = DOCS.read_text()
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"docs/sealed-image.md does not list {missing}"


def test_docs_cover_every_default_virt_sysprep_operation() -> None:
    if shutil.which("virt-sysprep") is None:
        pytest.skip("virt-sysprep (libguestfs-tools) is not installed")
    out = subprocess.run(
        ["virt-sysprep", "--list-operations"], capture_output=True, text=True, check=True
    ).stdout
    defaults = [ln.split()[0] for ln in out.splitlines() if re.match(r"^\S+ \* ", ln)]
    doc = DOCS.read_text()
    assert defaults and not [op for op in defaults if f"`{op}`" not in doc]


def _sh_leftovers(root: Path, phase: sealed_image.Phase) -> dict[str, str]:
    proc = subprocess.run(
        ["sh", "-c", check_script(phase), "check", USER, HOSTNAME, "yes", str(root)],
        capture_output=True,
        text=True,
        check=True,
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
    add_line("etc/hosts", "127.0.1.1 gmi-check-abc123")(root)
    assert "hosts-line" not in _sh_leftovers(root, "boot")
    assert "hosts-line" in _sh_leftovers(root, "seal")


def test_the_seal_script_is_valid_sh_and_ends_access_last() -> None:
    script = seal_script()
    subprocess.run(["sh", "-n", "-c", script], check=True)
    # The build's access goes only after the rest was checked: a failed seal can be resumed.
    assert script.index("rm -rf /var/log/journal/*") < script.index('rm -rf "$d"') < script.index("poweroff")
    assert script.index("rm -f /etc/ssh/ssh_host_*") > script.index("exit 3")


def test_a_missing_machine_id_is_named_too(tmp_path: Path) -> None:
    # Missing means first boot to systemd: systemd-firstboot would wait at the clone's console.
    root = clean_root(tmp_path)
    (root / "var/lib/dbus/machine-id").unlink()
    (root / "etc/machine-id").unlink()
    for phase in ("seal", "offline"):
        assert "missing" in _sh_leftovers(root, phase)["machine-id"]
        assert "missing" in _py_leftovers(root, phase)["machine-id"]


def test_a_locked_hash_is_still_a_leftover_and_other_names_are_not_the_users(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    # usermod -L keeps the hash behind a "!": it could be cracked offline.
    add_line("etc/shadow", f"{USER}:!$6$salt$hash:19000:0:99999:7:::")(root)
    # gmi-admin is not gmi; root's own line is the distribution's.
    add_line("etc/sudoers", "gmi-admin ALL=(ALL) ALL")(root)
    for phase in ("seal", "offline"):
        assert set(_sh_leftovers(root, phase)) == {"usable-password"}, phase
        assert set(_py_leftovers(root, phase)) == {"usable-password"}, phase


def test_a_localhost_build_hostname_keeps_the_localhost_lines(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    proc = subprocess.run(
        ["sh", "-c", check_script("seal"), "check", USER, "localhost", "yes", str(root)],
        capture_output=True, text=True, check=True,
    )
    assert "leftover hosts-line" not in proc.stdout
    facts = BuildFacts(user=USER, hostname="localhost", remove_user=True)
    assert not evaluate(LocalRoot(root), facts, "offline")["hosts-line"]
