"""The generated readme ``GMI-<Os>-<Ver>.md``: what the image is, how it was built
(from the events alone), its caveats, how to import it, and its checksums."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from events.store import RecordedEvent
from orchestrator.gmi.manifest import Manifest
from orchestrator.gmi.naming import METADATA, GmiNames
from orchestrator.gmi.sidecar import Sidecar
from orchestrator.markdown import cell, code, code_cell, plain
from states.stages import STAGE_NAMES, stage_by_name

MAX_STEPS_PER_STAGE = 12  # the readme summarizes; `gmi-fsm audit` has everything


@dataclass(slots=True)
class StepLine:
    name: str
    target: str
    command: str
    outcome: str = "in doubt"
    exit_code: object = None
    duration_s: object = None


@dataclass(slots=True)
class StageSummary:
    stage: str
    entered_at: str
    completed_at: str = ""
    steps: list[StepLine] = field(default_factory=list)


def summarize(events: Iterable[RecordedEvent]) -> list[StageSummary]:
    """Stages in the order entered, each with its steps' last attempt (probes and
    session steps are left out: they are bookkeeping, not how the image was made)."""
    stages: list[StageSummary] = []
    open_steps: dict[tuple[str, str], StepLine] = {}
    for ev in events:
        p = ev.payload
        if ev.type == "StageEntered":
            stages.append(StageSummary(p["stage"], ev.at))
        elif ev.type == "StageCompleted" and stages:
            stages[-1].completed_at = ev.at
        elif ev.type == "StepStarted" and not p.get("probe") and stages:
            line = StepLine(p["step"], p["target"], _first_line(str(p.get("command", ""))))
            key = (p["stage"], p["step"])
            # A retried step replaces its earlier attempt: the readme shows what held.
            stages[-1].steps = [s for s in stages[-1].steps if s.name != p["step"]]
            stages[-1].steps.append(line)
            open_steps[key] = line
        elif ev.type == "StepFinished" and not p.get("probe"):
            found = open_steps.pop((p["stage"], p["step"]), None)
            if found is not None:
                found.outcome, found.exit_code = p["outcome"], p.get("exit_code")
                found.duration_s = p.get("duration_s")
    return stages


def _first_line(text: str, width: int = 90) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    more = len(lines) > 1 or len(first) > width
    return first[:width] + (" …" if more else "")


def _v(value: object) -> str:
    if value is None or value in ([], ""):
        return "not recorded"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def render_readme(
    manifest: Manifest,
    sidecar: Sidecar,
    names: GmiNames,
    events: Iterable[RecordedEvent],
) -> str:
    m, x = manifest, sidecar
    svc = x.integration_services
    out: list[str] = []
    add = out.append
    title = x.os_pretty_name or f"{m.os} {m.version}"
    # Facts from the guest and spec values are content: orchestrator.markdown keeps
    # their fences, pipes, newlines, HTML and links from becoming the readme's own.
    add(f"# {names.stem}: {plain(title)}\n")
    add(f"{plain(m.description)}\n")
    if names.is_disk_only:
        add(
            "> **A disk-only GMI: not importable by vmgenie.** It was built without Hyper-V (on the\n"
            f"> {x.build.host_kind} host), so it has the disk but no Hyper-V VM configuration\n"
            "> (`Virtual Machines/`), which `genie gmi import` needs. Its name\n"
            f"> (`{names.zip}`, not `{names.finished.zip}`) makes vmgenie refuse it\n"
            "> before it changes anything. Finish it on a Hyper-V host into the\n"
            f"> importable `{names.finished.zip}` (see *How to use it*).\n"
        )
    add("## What it is\n")
    add("| | |\n|---|---|")
    rows = [
        ("OS", title),
        ("Kernel", x.kernel),
        ("cloud-init", x.cloud_init),
        (
            "Hyper-V daemons",
            f"{_v(svc.daemons)} (from {_v(svc.source)}, version {_v(svc.version)})",
        ),
        ("Packages installed", x.package_count),
        ("Default users", x.default_users),
        ("Locale", x.locale),
        ("VM name", m.vm_name),
        ("Hyper-V generation", m.hyperv_generation),
        ("Package", f"{names.zip} ({names.variant})"),
        ("Created / updated (UTC)", f"{m.created} / {m.updated}"),
        ("Maintainer", f"{m.maintainer} {f'<{m.maintainer_email}>' if m.maintainer_email else ''}".strip()),
        ("Source", m.source_url),
        (
            "Built by",
            f"gmi-fsm {_v(x.build.gmi_fsm_version)}, build {_v(x.build.id)} ({x.build.host_kind} host)",
        ),
    ]
    if x.parent is not None:
        rows.append(("Finished from", f"{x.parent.package} (sha256 {x.parent.sha256})"))
    for label, value in rows:
        add(f"| {label} | {cell(_v(value))} |")
    add("")
    add(
        f"vmgenie reads only the twelve keys of `{names.manifest}`; every other fact above is in "
        f"`{METADATA}` (the sidecar), with what ties this package to its build.\n"
    )
    add("## How it was built\n")
    add(
        "Every command gmi-fsm sent was recorded, before and after it ran, in a hash-chained "
        f"event log ({code(names.events)}, head {code(x.event_log.head_hash)} at seq "
        f"{plain(x.event_log.seq)}). Stages and their steps, summarized from that log:\n"
    )
    stages = summarize(events)
    if not stages:
        add("_No stage events were recorded before the manifest was written._\n")
    for st in stages:
        title_ = stage_by_name(st.stage).title if st.stage in STAGE_NAMES else st.stage
        state = "completed" if st.completed_at else "in progress when documented"
        add(f"### {plain(title_)} ({code(st.stage)}, {state})\n")
        if not st.steps:
            add("No commands.\n")
            continue
        add("| step | on | command | outcome |\n|---|---|---|---|")
        for s in st.steps[:MAX_STEPS_PER_STAGE]:
            ec = f" (exit {s.exit_code})" if s.exit_code is not None else ""
            cells = [cell(s.name), cell(s.target), code_cell(s.command), cell(s.outcome) + cell(ec)]
            add("| " + " | ".join(cells) + " |")
        hidden = len(st.steps) - MAX_STEPS_PER_STAGE
        if hidden > 0:
            add(f"| … | | {hidden} more steps: see {code_cell(f'gmi-fsm audit {x.build.id}')} | |")
        add("")
    add("## Caveats\n")
    for caveat in caveats(x):
        add(f"- {caveat}")
    add("")
    add("## How to use it\n")
    add(usage(m, names))
    add("## Checksums\n")
    add(
        f"- `{names.disk_entry}`: sha256 {code(m.disk_sha256)} (also `checksum_sha256` in `{names.manifest}`)"
    )
    add(
        f"- The package itself (`{names.zip}`) cannot name its own digest: see `SHA256SUMS` and "
        f"`{names.provenance}` (in-toto / SLSA provenance) published beside it."
    )
    add(f"- Verify offline: `sha256sum -c SHA256SUMS`, then `gmi-fsm validate {names.zip}`.\n")
    return "\n".join(out)


def caveats(m: Sidecar) -> list[str]:
    out = [
        "Generation 2 only. Secure Boot: use the template *Microsoft UEFI Certificate Authority* "
        "(not *Microsoft Windows*); some distributions need Secure Boot off.",
        "The image is sealed: no SSH host keys, an empty machine-id and no cloud-init instance "
        "data. The first boot needs a cloud-init NoCloud seed (vmgenie provides one) to set the "
        "hostname and users; without it there is no way to log in.",
        "Hyper-V reports the guest's IP address only through KVP (`hv_kvp_daemon`); the first "
        "address can be an IPv6 link-local one.",
    ]
    if m.integration_services.source == "source":
        out.append(
            "The Hyper-V daemons were built from the kernel's `tools/hv` (no distribution package): "
            "they are installed in /usr/local/sbin and must be rebuilt after a kernel upgrade."
        )
    missing = [
        label
        for label, value in (
            ("kernel", m.kernel),
            ("cloud-init version", m.cloud_init),
            ("Hyper-V daemons", m.integration_services.daemons),
            ("default users", m.default_users),
        )
        if not value
    ]
    if missing:
        out.append(f"Not recorded by this build: {', '.join(missing)}.")
    return out


def usage(m: Manifest, names: GmiNames) -> str:
    if names.is_disk_only:
        full = names.finished
        return (
            f"`gmi-fsm validate {names.zip}` reports it as a valid disk-only GMI that vmgenie cannot "
            "import (exit code 15). To make the importable GMI, finish it on a Hyper-V host: a gmi-fsm "
            "build on the Hyper-V host whose source is this package uploads the disk, creates the "
            f"generation 2 VM named exactly `{m.vm_name}`, boots it with a fresh seed to validate it, "
            f'exports it and packages `{full.zip}` (docs/package.md, "Finishing a disk-only GMI").\n\n'
            "By hand on the Hyper-V host, the same in short:\n\n"
            "```powershell\n"
            f"Expand-Archive {names.zip} -DestinationPath C:\\GMI\\{names.stem}\n"
            f"New-VM -Name '{m.vm_name}' -Generation 2 -MemoryStartupBytes 2GB `\n"
            f"  -VHDPath 'C:\\GMI\\{names.stem}\\{names.disk_entry.replace('/', chr(92))}' "
            "-SwitchName 'Default Switch'\n"
            f"Set-VMFirmware -VMName '{m.vm_name}' -SecureBootTemplate MicrosoftUEFICertificateAuthority\n"
            f"Set-VM -Name '{m.vm_name}' -AutomaticCheckpointsEnabled $false\n"
            f"Export-VM -Name '{m.vm_name}' -Path C:\\GMI\\export\n"
            "```\n\n"
            f"then zip the contents of `C:\\GMI\\export\\{m.vm_name}` with `{full.manifest}` (this "
            f"package's `{names.manifest}`, renamed) and `{full.readme}` at the root, as `{full.zip}`. "
            "gmi-fsm's Hyper-V build does this, and records it.\n"
        )
    return (
        "With vmgenie:\n\n"
        "```powershell\n"
        f"genie gmi import {names.zip}\n"
        "```\n\n"
        "vmgenie checks `checksum_sha256`, then runs `Import-VM -Path <vmcx> -Copy "
        "-GenerateNewId:$false`. By hand: expand the archive and run that `Import-VM` on the one "
        "`.vmcx` in `Virtual Machines/`.\n"
    )
