"""Turn a spec's ``host: {kind: hyperv}`` into a HyperVHost with its executor:
PowerShell Remoting to a real host, or the SIMULATOR when ``host.simulator`` is set."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.hyperv.executor import PowerShellExecutor
from orchestrator.hyperv.host import HyperVHost, no_guest_steps
from orchestrator.spec import BuildSpec, HyperVHostSpec

if TYPE_CHECKING:
    from orchestrator.view import BuildView

log = logging.getLogger(__name__)


def executor_for(spec: HyperVHostSpec, base_dir: Path) -> PowerShellExecutor:
    if spec.simulator is not None:
        from orchestrator.hyperv.simulator import HyperVSimulator  # noqa: PLC0415

        state = Path(spec.simulator.state).expanduser()
        sim = HyperVSimulator(
            state if state.is_absolute() else base_dir / state,
            kvp_delay_s=spec.simulator.kvp_delay_s,
            guest_address=spec.simulator.guest_address,
        )
        # Said loudly, every run: nothing here touches a Hyper-V host.
        print(f"gmi-fsm: SIMULATOR: host kind hyperv runs against {sim.label}", file=sys.stderr)
        log.warning("SIMULATOR in use: %s", sim.label)
        return sim
    from orchestrator.hyperv.psrp import PsrpConnection, PsrpExecutor  # noqa: PLC0415
    from orchestrator.secrets import resolve  # noqa: PLC0415

    password = (
        resolve(spec.password, where="host.password", base_dir=base_dir).reveal() if spec.password else None
    )
    ca: bool | str = True
    if spec.ca_bundle:
        ca_path = Path(spec.ca_bundle).expanduser()
        ca = str(ca_path if ca_path.is_absolute() else base_dir / ca_path)
    return PsrpExecutor(
        PsrpConnection(
            host=spec.host,
            port=spec.port,
            https=spec.transport == "https",
            auth=spec.auth,
            username=spec.username,
            password=password,
            cert_validation=ca,
            certificate_pem=spec.certificate_pem,
            certificate_key_pem=spec.certificate_key_pem,
        )
    )


def make_hyperv_host(spec: BuildSpec, base_dir: Path, view: BuildView) -> HyperVHost:
    assert isinstance(spec.host, HyperVHostSpec)
    sim = spec.host.simulator
    # Real hosts plan guest steps lazily (plan() imports orchestrator.guest when first needed).
    planner = no_guest_steps if sim is not None and not sim.guest_steps else None
    return HyperVHost(
        spec,
        base_dir,
        view.build_id,
        executor_for(spec.host, base_dir),
        view=view,
        guest_planner=planner,
    )
