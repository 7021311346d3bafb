"""Choose the host implementation for a spec (imports are lazy: each host pulls in
its own heavy libraries)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.spec import BuildSpec

if TYPE_CHECKING:
    from orchestrator.hosts.base import Host
    from orchestrator.view import BuildView


def make_host(spec: BuildSpec, base_dir: Path, view: BuildView) -> Host:
    kind = spec.host.kind
    if kind == "local":
        from orchestrator.hosts.local import LocalHost  # noqa: PLC0415

        return LocalHost(spec, base_dir)
    if kind == "qemu":
        from orchestrator.hosts.qemu import QemuHost  # noqa: PLC0415

        return QemuHost(spec, base_dir, view)
    if kind == "hyperv":
        from orchestrator.hyperv.connect import make_hyperv_host  # noqa: PLC0415

        return make_hyperv_host(spec, base_dir, view)
    msg = f"host kind {kind!r} is not available in this build of gmi-fsm"
    raise ValueError(msg)
