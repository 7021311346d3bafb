"""The packaging tests' fixtures live in tests/support/gmi_fixtures.py (importable by
name: two folders' `conftest` modules would shadow each other)."""

from tests.support.gmi_fixtures import copy_of, disk_only_build, hyperv_build, vhdx_master

__all__ = ["copy_of", "disk_only_build", "hyperv_build", "vhdx_master"]
