"""The boot-validate stage's guest checks, decided from recorded command outputs."""

from __future__ import annotations

from orchestrator.gmi.checks import Expectations, Output, evaluate, probes
from states import sealed_image

BUILD_MID = "0123456789abcdef0123456789abcdef"
BUILD_FP = "SHA256:buildbuildbuildbuildbuildbuildbuildbuild0"
EXPECT = Expectations(
    hostname="gmi-check-1",
    user="genie",
    daemons=("hv-kvp-daemon", "hv-vss-daemon"),
    build_machine_id=BUILD_MID,
    build_host_key_fingerprint=BUILD_FP,
)

GOOD = {
    "cloud_init": Output(
        "status: done\nextended_status: done\nboot_status_code: enabled-by-generator\n"
        "detail:\nDataSourceNoCloud [seed=/dev/sr0][dsmode=net]\nerrors: []\nrecoverable_errors: {}\n",
        0,
    ),
    "hostname": Output("gmi-check-1\n", 0),
    "machine_id": Output("fedcba9876543210fedcba9876543210\n", 0),
    "ssh_keys": Output(
        "moduli\nssh_config\nsshd_config\nssh_host_ed25519_key\nssh_host_ed25519_key.pub\n", 0
    ),
    "ssh_fingerprint": Output(
        "256 SHA256:freshfreshfreshfreshfreshfreshfreshfresh00 root@gmi (ED25519)\n", 0
    ),
    "user": Output("genie:x:1000:1000::/home/genie:/bin/bash\n", 0),
    "network": Output("2: eth0    inet 172.20.1.23/20 brd 172.20.15.255 scope global dynamic eth0\n", 0),
    "hv_daemons": Output("active\nactive\n", 0),
    "failed_units": Output("", 0),
    "sealed": Output("".join(f"ok {it.id}: {it.what}\n" for it in sealed_image.for_phase("boot")), 0),
    "journal": Output(
        "boots=1\nmachine_id=fedcba9876543210fedcba9876543210\ndir=fedcba9876543210fedcba9876543210\n", 0
    ),
    "passwd": Output("root:x:0:0:root:/root:/bin/bash\ngenie:x:1000:1000::/home/genie:/bin/bash\n", 0),
}


def _by_name(outputs: dict[str, Output], expect: Expectations = EXPECT) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.evidence) for c in evaluate(outputs, expect)}


def test_probes_cover_every_check() -> None:
    names = [p.name for p in probes(EXPECT)]
    assert set(names) == set(GOOD)
    sealed = next(p for p in probes(EXPECT) if p.name == "sealed")
    assert sealed.sudo and sealed.args == ("", "", "no")
    assert "hv-kvp-daemon hv-vss-daemon" in next(p.command for p in probes(EXPECT) if p.name == "hv_daemons")


def test_a_good_first_boot_passes() -> None:
    results = _by_name(GOOD)
    assert all(status == "pass" for status, _ in results.values()), results
    assert "172.20.1.23" in results["boot.network"][1]


def test_each_failure_names_its_cause() -> None:
    bad = dict(GOOD)
    bad["cloud_init"] = Output("status: error\nerrors:\n- 'failed to mount seed'\n", 1)
    bad["hostname"] = Output("localhost\n", 0)
    bad["machine_id"] = Output(BUILD_MID + "\n", 0)
    bad["ssh_fingerprint"] = Output(f"256 {BUILD_FP} root@build (ED25519)\n", 0)
    bad["user"] = Output("", 2)
    bad["network"] = Output("", 0)
    bad["hv_daemons"] = Output("active\ninactive\n", 3)
    bad["failed_units"] = Output(
        "cloud-final.service loaded failed failed Execute cloud user/final scripts\n", 0
    )
    bad["sealed"] = Output("", 1, "sudo: a password is required")
    bad["journal"] = Output(f"boots=2\nmachine_id=fedcba9876543210fedcba9876543210\ndir={BUILD_MID}\n", 0)
    r = _by_name(bad)
    assert all(status == "fail" for status, _ in r.values()), r
    assert "status error" in r["boot.cloud_init"][1]
    assert "'localhost'" in r["boot.hostname"][1]
    assert "build VM's" in r["boot.machine_id"][1]
    assert BUILD_FP in r["boot.ssh_host_keys"][1]
    assert "hv-vss-daemon=inactive" in r["boot.hyperv_daemons"][1]
    assert "cloud-final.service" in r["boot.failed_units"][1]
    assert "password is required" in r["boot.sealed"][1]
    assert "2 boots" in r["boot.sealed.journal"][1] and BUILD_MID in r["boot.sealed.journal"][1]


def test_a_leftover_in_the_copy_is_named() -> None:
    left = dict(GOOD)
    left["sealed"] = Output(
        GOOD["sealed"].stdout.replace(
            "ok build-user-sudo:", "leftover build-user-sudo: /etc/sudoers.d/gmi names gmi\nx:"
        ),
        0,
    )
    r = _by_name(left)
    assert r["boot.sealed.build-user-sudo"][0] == "fail"
    assert "/etc/sudoers.d/gmi names gmi" in r["boot.sealed.build-user-sudo"][1]
    # An item the script did not report at all is not taken as passed.
    missing = dict(GOOD)
    missing["sealed"] = Output("ok hostname: x\n", 0)
    assert _by_name(missing)["boot.sealed.build-user"][0] == "fail"


def test_uninitialized_machine_id_and_missing_keys_fail() -> None:
    bad = dict(GOOD)
    bad["machine_id"] = Output("uninitialized\n", 0)
    bad["ssh_keys"] = Output("ssh_config\nsshd_config\n", 0)
    r = _by_name(bad)
    assert r["boot.machine_id"][0] == "fail" and r["boot.ssh_host_keys"][0] == "fail"


def test_daemons_are_skipped_off_hyperv() -> None:
    expect = Expectations(hostname="gmi-check-1", user="genie", hyperv=False)
    r = _by_name({**GOOD, "hv_daemons": Output("inactive\n", 3)}, expect)
    assert r["boot.hyperv_daemons"][0] == "skip"


def test_failed_hv_units_are_expected_only_off_hyperv() -> None:
    from orchestrator.gmi.checks import Output, check_failed_units

    out = Output("hv-vss-daemon.service loaded failed failed X\nhv-fcopy-daemon.service loaded failed\n", 0)
    off = check_failed_units(out, hyperv=False)
    assert off.status == "pass"
    assert "hv-vss-daemon.service" in off.evidence
    assert check_failed_units(out, hyperv=True).status == "fail"
    other = Output("nginx.service loaded failed failed\nhv-vss-daemon.service loaded failed\n", 0)
    assert check_failed_units(other, hyperv=False).status == "fail"
