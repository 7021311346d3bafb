"""The Hyper-V tests' fixtures live in tests/support/hyperv_sim.py (importable by name:
two folders' `conftest` modules would shadow each other)."""

from tests.support.hyperv_sim import sim_build

__all__ = ["sim_build"]
