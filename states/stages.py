"""The GMI stages, in order, as data. The seed checklist's sections in brackets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    title: str
    summary: str


STAGES: tuple[Stage, ...] = (
    Stage("provision", "Provision the VM", "Create the build VM and its disk [Step 1]."),
    Stage("install_os", "Install the OS", "Install from the ISO, or start from a base disk [Step 1]."),
    Stage("update", "Update and minimize", "Full OS update, remove what is not needed [Step 2]."),
    Stage("cloud_init", "Prepare cloud-init", "Install cloud-init, NoCloud datasource [Step 3]."),
    Stage(
        "hyperv_integration",
        "Hyper-V integration",
        "hv_* drivers in the initramfs, KVP/VSS daemons installed and enabled [Step 4].",
    ),
    Stage("cleanup", "Clean up", "Caches, logs, histories, leases, identity; zero-fill [Step 5]."),
    Stage("seal", "Seal and shut down", "cloud-init clean, host keys removed, power off [Step 6]."),
    Stage("compact", "Compact", "Merge checkpoints, compact into a dynamic VHDX [Step 6]."),
    Stage("export", "Export", "Export the VM [Step 7]."),
    Stage("document", "Document", "Write the manifest and readme from recorded facts [Step 7]."),
    Stage("package", "Package", "Zip, checksums, event log, provenance [Section 6]."),
    Stage("validate", "Validate", "Boot a throwaway copy with a fresh seed and check it [Section 5]."),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
FIRST_STAGE = STAGE_NAMES[0]
LAST_STAGE = STAGE_NAMES[-1]

# Machine states that are not stages.
REQUESTED = "requested"
PAUSED = "paused"
FAILED = "failed"
ABORTED = "aborted"
SUCCEEDED = "succeeded"
TERMINAL = frozenset({ABORTED, SUCCEEDED})


def next_stage(stage: str) -> str | None:
    i = STAGE_NAMES.index(stage)
    return STAGE_NAMES[i + 1] if i + 1 < len(STAGE_NAMES) else None


def stage_by_name(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)
