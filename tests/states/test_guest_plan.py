"""The OS-family command sets, on what they render (dnf and zypper have no guest here;
apt also runs for real in tests/orchestrator/test_qemu_build.py)."""

import os
import shlex
import subprocess

import pytest

from states.guest_plan import FAMILIES, FamilyDataError, guest_steps
from states.stages import STAGE_NAMES

OPTIONS = {
    "prepare.update": True,
    "prepare.remove_packages": ["nano", "x11-common"],
    "prepare.extra_packages": ["qemu-guest-agent"],
    "prepare.hyperv_daemons": "package",
    "prepare.grub_timeout_zero": True,
    "prepare.free_space": "zero-fill",
    "prepare.keep_build_user": False,
    "prepare.locale": "en_US.UTF-8",
    "guest.user": "genie",
    "source.installed": False,
}


def names(family: str, stage: str, **overrides: object) -> list[str]:
    return [s.name for s in guest_steps(family, stage, {**OPTIONS, **overrides})]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_covers_the_guest_stages(family: str) -> None:
    for stage in ("install_os", "update", "cloud_init", "hyperv_integration", "cleanup", "seal"):
        assert guest_steps(family, stage, OPTIONS), f"{family} has no steps for {stage}"
    for stage in ("provision", "compact", "export", "document", "package", "validate"):
        assert guest_steps(family, stage, OPTIONS) == []
    assert names(family, "seal") == ["seal-and-power-off"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_script_is_valid_posix_sh(family: str) -> None:
    for stage in STAGE_NAMES:
        for hv in ("package", "source"):
            for step in guest_steps(family, stage, {**OPTIONS, "prepare.hyperv_daemons": hv}):
                assert step.command.text.startswith("(\nset -e\n")
                assert step.command.text.endswith("sync\nexit $rc\n")
                # `sh -n` parses without running.
                proc = subprocess.run(["sh", "-n", "-c", step.command.text], capture_output=True, text=True)
                assert proc.returncode == 0, f"{family} {step.id}: {proc.stderr}"


def test_dnf_renders_dnf_commands_and_dracut() -> None:
    update = {s.name: s for s in guest_steps("dnf", "update", OPTIONS)}
    assert "dnf -y -q upgrade --refresh" in update["full-upgrade"].command.text
    assert update["remove-packages"].command.args == ("nano", "x11-common")
    assert '"$@"' in update["remove-packages"].command.text
    hv = {s.name: s for s in guest_steps("dnf", "hyperv_integration", OPTIONS)}
    assert "dnf -y -q install hyperv-daemons" in hv["install-daemons"].command.text
    assert "dracut -f --regenerate-all" in hv["initramfs-drivers"].command.text
    assert (
        "dnf -y -q clean all"
        in {s.name: s for s in guest_steps("dnf", "cleanup", OPTIONS)}["package-cache"].command.text
    )


def test_zypper_renders_zypper_commands_and_source_build() -> None:
    upd = {s.name: s for s in guest_steps("zypper", "update", OPTIONS)}
    assert "zypper --non-interactive --quiet update" in upd["full-upgrade"].command.text
    hv = {
        s.name: s
        for s in guest_steps("zypper", "hyperv_integration", {**OPTIONS, "prepare.hyperv_daemons": "source"})
    }
    assert "install-daemons" not in hv
    build = hv["build-daemons"]
    assert "tools/hv" in build.command.text
    assert "kernel-source" in build.command.text
    assert build.facts == "key_value"
    assert "hyperv.daemons.source=source:" in build.command.text


def test_options_decide_which_steps_apply() -> None:
    assert "full-upgrade" not in names("apt", "update", **{"prepare.update": False})
    assert "refresh-index" in names("apt", "update", **{"prepare.update": False})
    assert "remove-packages" not in names("apt", "update", **{"prepare.remove_packages": []})
    assert "zero-fill" in names("apt", "cleanup")
    assert "fstrim" in names("apt", "cleanup", **{"prepare.free_space": "fstrim"})
    assert "zero-fill" not in names("apt", "cleanup", **{"prepare.free_space": "none"})


def test_user_values_are_arguments_never_script_text() -> None:
    hostile = ["a'b", "$(touch /tmp/pwned)", "x;y", "`id`", "new\nline", "ünï"]
    steps = guest_steps("apt", "update", {**OPTIONS, "prepare.extra_packages": hostile})
    install = next(s for s in steps if s.name == "install-packages")
    assert install.command.args == tuple(hostile)
    for value in hostile:
        assert value not in install.command.text
    # And the shell sees them verbatim as "$@".
    script = 'printf "%s\\0" "$@"'
    out = subprocess.run(["sh", "-c", script, "gmi", *install.command.args], capture_output=True).stdout
    assert out.split(b"\0")[:-1] == [v.encode() for v in hostile]
    assert shlex.quote(hostile[1]) != hostile[1]


def test_seal_is_the_last_command_and_ends_the_connection() -> None:
    (seal,) = guest_steps("apt", "seal", OPTIONS)
    text = seal.command.text
    assert seal.command.ends_connection
    # What ends the build's access (host keys, cloud-init's instance) goes after the first check.
    first_check = text.index("exit 3")
    assert first_check < text.index("rm -f /etc/ssh/ssh_host_") < text.index("poweroff")
    assert first_check < text.index("cloud-init clean") < text.index("poweroff")
    assert seal.command.args == ("genie", "False")


def _origin(tmp_path: object, log: str, *args: str) -> dict[str, str]:
    """Run install_os/build-user-origin against a fake cloud-init log (paths rewritten
    into tmp_path: the step writes /var/lib/gmi-fsm in a guest)."""
    (step,) = [s for s in guest_steps("apt", "install_os", OPTIONS) if s.name == "build-user-origin"]
    root = str(tmp_path)
    os.makedirs(f"{root}/var/log", exist_ok=True)
    with open(f"{root}/var/log/cloud-init.log", "w") as f:
        f.write(log)
    script = step.command.text.replace("/var/", f"{root}/var/")
    proc = subprocess.run(["sh", "-c", script, "origin", *args], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def test_build_user_origin_decides_once_from_cloud_inits_first_boot(tmp_path: object) -> None:
    made = _origin(tmp_path, "2026 - __init__.py[DEBUG]: Adding user genie\n", "genie", "False", "False")
    assert made["guest.user_created"] == "true" and made["guest.user_removed_at_seal"] == "true"
    # Decided once: later runs (logs truncated by cleanup) keep the first answer.
    again = _origin(tmp_path, "", "genie", "False", "True")
    assert again["guest.user_created"] == "true" and again["guest.user_removed_at_seal"] == "false"


def test_a_user_of_the_base_image_is_kept(tmp_path: object) -> None:
    facts = _origin(tmp_path, "User genie already exists, skipping.\n", "genie", "False", "False")
    assert facts["guest.user_created"] == "false" and facts["guest.user_removed_at_seal"] == "false"


def test_unknown_family_is_refused() -> None:
    with pytest.raises(FamilyDataError, match="unknown OS family"):
        guest_steps("pacman", "update", OPTIONS)


def _facts_image(env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the cleanup/facts-image script here (read-only, no sudo) and parse its facts."""
    (step,) = [s for s in guest_steps("apt", "cleanup", OPTIONS) if s.name == "facts-image"]
    assert step.facts == "key_value"
    assert not step.command.sudo
    proc = subprocess.run(
        ["sh", "-c", step.command.text], capture_output=True, text=True, env=env, check=True
    )
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def test_facts_image_records_used_bytes_of_root_and_of_all_block_filesystems() -> None:
    facts = _facts_image()
    assert facts["fs.used_bytes"].isdigit()
    assert facts["fs.used_bytes_all"].isdigit()


FAKE_DF = """#!/bin/sh
case "$*" in
  *source,fstype,used*) cat <<'TABLE'
Filesystem          Type           Used
udev                devtmpfs          0
tmpfs               tmpfs       1048576
/dev/sda2           ext4      513515520
/dev/sda1           vfat        3446272
/dev/sda2           ext4      513515520
/dev/loop0          squashfs   58720256
overlay             overlay          99
/dev/mapper/vg-home xfs      5000000000
proc                proc              0
TABLE
  ;;
  *) printf '     Used\\n513515520\\n' ;;
esac
"""


def test_used_bytes_all_counts_each_block_device_once(tmp_path) -> None:
    # df's answer on a machine with an ESP, a bind mount of /, a snap and a big /home.
    (tmp_path / "df").write_text(FAKE_DF)
    (tmp_path / "df").chmod(0o755)
    facts = _facts_image({**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert facts["fs.used_bytes"] == "513515520"
    # root + ESP + /home; not tmpfs, overlay, the loop-mounted squashfs, or / again.
    assert facts["fs.used_bytes_all"] == str(513515520 + 3446272 + 5000000000)
