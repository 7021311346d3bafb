"""OVMF lookup and per-VM VARS copies, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.qemu.firmware import (
    ENV_CODE,
    ENV_VARS,
    OVMF_CANDIDATES,
    FirmwareNotFoundError,
    find_ovmf,
)


def _pair(tmp_path: Path, name: str) -> tuple[str, str]:
    code = tmp_path / f"{name}_CODE.fd"
    vars_ = tmp_path / f"{name}_VARS.fd"
    code.write_bytes(b"code-" + name.encode())
    vars_.write_bytes(b"vars-" + name.encode())
    return str(code), str(vars_)


def test_first_complete_pair_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CODE, raising=False)
    monkeypatch.delenv(ENV_VARS, raising=False)
    code_only = (str(tmp_path / "A_CODE.fd"), str(tmp_path / "A_VARS_missing.fd"))
    Path(code_only[0]).write_bytes(b"x")
    good = _pair(tmp_path, "B")
    fw = find_ovmf([code_only, good])
    assert (str(fw.code), str(fw.vars_template)) == good


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_pair = _pair(tmp_path, "ENV")
    monkeypatch.setenv(ENV_CODE, env_pair[0])
    monkeypatch.setenv(ENV_VARS, env_pair[1])
    fw = find_ovmf([_pair(tmp_path, "OTHER")])
    assert str(fw.code) == env_pair[0]


def test_missing_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CODE, raising=False)
    with pytest.raises(FirmwareNotFoundError) as err:
        find_ovmf([(str(tmp_path / "no_CODE.fd"), str(tmp_path / "no_VARS.fd"))])
    msg = str(err.value)
    assert "apt-get install" in msg
    assert "ovmf" in msg
    assert str(tmp_path / "no_CODE.fd") in msg


def test_vars_copy_is_private_and_template_untouched(tmp_path: Path) -> None:
    fw = find_ovmf([_pair(tmp_path, "T")])
    copy = fw.copy_vars(tmp_path / "vm1" / "OVMF_VARS.fd")
    assert copy.read_bytes() == b"vars-T"
    copy.write_bytes(b"changed by the guest")
    assert fw.vars_template.read_bytes() == b"vars-T"
    args = fw.pflash_args(copy)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={fw.code}" in args
    assert f"if=pflash,format=raw,unit=1,file={copy}" in args


def test_this_host_has_debian_ovmf() -> None:
    code, vars_ = OVMF_CANDIDATES[0]
    if not Path(code).exists():
        pytest.skip("ovmf is not installed (apt-get install ovmf)")
    fw = find_ovmf()
    assert fw.code.is_file()
    assert fw.vars_template.is_file()
