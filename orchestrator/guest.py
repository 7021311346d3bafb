"""The spec's options for the guest stages (``states/guest_plan.py``)."""

from __future__ import annotations

from typing import Any

from orchestrator.spec import BuildSpec
from states.guest_plan import guest_steps as render
from states.steps import Step


def guest_options(spec: BuildSpec) -> dict[str, Any]:
    p = spec.prepare
    return {
        "prepare.update": p.update,
        "prepare.remove_packages": list(p.remove_packages),
        "prepare.extra_packages": list(p.extra_packages),
        "prepare.hyperv_daemons": p.hyperv_daemons,
        "prepare.grub_timeout_zero": p.grub_timeout_zero,
        "prepare.free_space": p.free_space,
        "prepare.keep_build_user": p.keep_build_user,
        "prepare.locale": p.locale,
        "guest.user": spec.guest.user if spec.guest else "",
        # Installed from an ISO: every user on the disk was made by this build.
        "source.installed": bool(spec.source is not None and spec.source.iso is not None),
    }


def guest_steps(spec: BuildSpec, stage: str) -> list[Step]:
    """The guest steps of ``stage`` for this spec's OS family, in order."""
    return render(spec.os.family, stage, guest_options(spec), default_timeout_s=spec.step_timeout_s)
