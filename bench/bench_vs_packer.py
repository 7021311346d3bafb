"""A whole Debian 12 build: gmi-fsm vs Packer 1.6.6's qemu builder, same run, same base disk.

Both sides start from the lab base disk (`gmi-fsm lab base-image`), make their own
fresh work copy, boot it under the same qemu settings (q35, OVMF CODE/VARS pflash,
TCG `-cpu max`, the spec's memory and CPUs, virtio disk/net/rng, the same NoCloud
seed), run THE SAME guest scripts (rendered by gmi-fsm's own `guest_steps`; see
bench/packer/template.py), seal and power off, and end with a checked dynamic VHDX
(`qemu-img convert -O vhdx -o subformat=dynamic,block_size=1048576` + `qemu-img
check`).

What is compared: gmi-fsm from process start to its `compact` stage completing
(provision, install_os, update, cloud_init, hyperv_integration, cleanup, seal,
compact: the VHDX is written, checked and digested) vs Packer from process start to
its exit, plus the VHDX conversion and check. gmi-fsm then goes on with export,
document, package (zip, checksums, provenance) and validate (boots the GMI again with
a fresh seed and checks it): those are reported separately, not compared, since the
Packer side has no equivalent. gmi-fsm also records every step as events (commits,
output blobs), which is part of the compared time.

Rounds alternate which side goes first (machine load hits both). Goal: gmi-fsm's
compared time <= 1.0x Packer's.

Usage: python bench/bench_vs_packer.py [--rounds N] [--work DIR] [--lab DIR] [--first gmi|packer]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPEC = """\
name: bench-vs-packer
os: {{name: Debian, version: "12", family: apt}}
host:
  kind: qemu
  memory_mib: 1536
  cpus: 2
  firmware: uefi
  accel: tcg
source:
  base_image: {base}
guest:
  user: gmi
  ssh_private_key: file:{key}
prepare:
  update: true
  hyperv_daemons: package
  free_space: {free_space}
output:
  dir: {out}
"""


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def _lab(args: argparse.Namespace) -> tuple[Path, Path]:
    lab = Path(args.lab) if args.lab else Path(args.work) / "lab"
    if not (lab / "lab_ed25519").exists():
        subprocess.run(["gmi-fsm", "lab", "base-image", "--out", str(lab)], check=True, capture_output=True)
    (base,) = lab.glob("*.qcow2")
    return base, lab / "lab_ed25519"


def _ts(at: str) -> float:
    return float(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())


def run_gmi(work: Path, base: Path, key: Path, free_space: str = "zero-fill") -> dict[str, Any]:
    from events.store import SqliteEventStore

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(base=base, key=key, out=work / "out", free_space=free_space))
    env = {**os.environ, "GMI_FSM_DB": str(work / "events.db")}
    load0 = _load()
    wall0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(["gmi-fsm", "run", str(spec)], env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    (work / "run.log").write_text(proc.stdout + proc.stderr)
    store = SqliteEventStore(work / "events.db", readonly=True)
    try:
        (build_id,) = store.build_ids()
        events = list(store.read(build_id))
    finally:
        store.close()
    if proc.returncode != 0:
        raise RuntimeError(f"gmi-fsm run failed ({proc.returncode}); see {work / 'run.log'}")
    stage_t: dict[str, list[float]] = {}
    steps: list[dict[str, Any]] = []
    targets: dict[str, str] = {}
    for ev in events:
        p = ev.payload
        if ev.type == "StageEntered":
            stage_t[p["stage"]] = [_ts(ev.at)]
        elif ev.type == "StageCompleted":
            stage_t[p["stage"]].append(_ts(ev.at))
        elif ev.type == "StepStarted":
            targets[f"{p['stage']}/{p['step']}"] = p["target"]
        elif ev.type == "StepFinished":
            sid = f"{p['stage']}/{p['step']}"
            steps.append({"id": sid, "target": targets[sid], "s": p["duration_s"], "outcome": p["outcome"]})
    facts = {ev.payload["key"]: ev.payload["value"] for ev in events if ev.type == "FactRecorded"}
    vhdx = [
        ev.payload
        for ev in events
        if ev.type == "ArtifactRecorded" and ev.payload["name"] == "vhdx_compacted"
    ]

    def step_s(pred: Callable[[dict[str, Any]], bool]) -> float:
        return round(float(sum(s["s"] for s in steps if pred(s))), 1)

    compared = stage_t["compact"][1] - wall0
    stages = {k: round(v[1] - v[0], 1) for k, v in stage_t.items() if len(v) == 2}
    guest_s = step_s(lambda s: s["target"] == "guest" and not s["id"].startswith("seal/"))
    boot_s = step_s(lambda s: s["id"].endswith("vm.ensure-running"))

    def in_compared(s: dict[str, Any]) -> bool:
        return str(s["id"]).split("/")[0] in COMPARED_STAGES

    host_ops_s = step_s(
        lambda s: s["target"] != "guest" and in_compared(s) and not s["id"].startswith("seal/")
    )
    seal_s = step_s(lambda s: s["id"].startswith("seal/"))
    return {
        "side": "gmi-fsm",
        "build_id": build_id,
        "compared_s": round(compared, 1),
        "total_s": round(total, 1),
        "breakdown_s": {
            "start_to_first_stage": round(stage_t["provision"][0] - wall0, 1),
            "provision (inspect, copy, seed)": stages.get("provision"),
            "boot to ssh (vm.ensure-running)": boot_s,
            "guest steps": guest_s,
            "seal + power off": stages.get("seal"),
            "compact (vhdx, check, sha256)": stages.get("compact"),
            "unaccounted (events, between steps)": round(
                compared - (stage_t["provision"][0] - wall0) - guest_s - host_ops_s - seal_s, 1
            ),
            "not compared: export": stages.get("export"),
            "not compared: document": stages.get("document"),
            "not compared: package": stages.get("package"),
            "not compared: validate (boot + checks)": stages.get("validate"),
        },
        "stages_s": stages,
        "guest_steps": [s for s in steps if s["target"] == "guest"],
        "fs_used_bytes": int(facts.get("fs.used_bytes", 0)),
        "vhdx_bytes": vhdx[-1]["size"] if vhdx else None,
        "events": len(events),
        "loadavg_1m": [round(load0[0], 2), round(_load()[0], 2)],
    }


COMPARED_STAGES = (
    "provision",
    "install_os",
    "update",
    "cloud_init",
    "hyperv_integration",
    "cleanup",
    "seal",
    "compact",
)

_PACKER_MARKS = {
    "retrieve": "Retrieving ISO",
    "start_vm": "Starting VM",
    "wait_ssh": "Waiting for SSH",
    "connected": "Connected to SSH",
    "first_provisioner": "Provisioning with shell script",
    "halt": "Gracefully halting",
    "halted_next": None,
}


def run_packer(work: Path, base: Path, key: Path, spec_for_scripts: Path) -> dict[str, Any]:
    from packer.template import write_template

    from orchestrator.hosts.qemu import _cloud_config
    from orchestrator.qemu.firmware import find_ovmf
    from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load0 = _load()
    t0 = time.perf_counter()
    # Setup Packer needs that gmi-fsm does inside its timed run (seed, VARS copy).
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], check=True, capture_output=True, text=True)
    seed = work / "seed.iso"
    write_seed_iso(
        seed,
        SeedFiles(_cloud_config("gmi", public.stdout.strip(), hostname="gmi-build"),
                  meta_data(f"gmi-build-packer-{int(time.time())}", "gmi-build")),
    )  # fmt: skip
    ovmf = find_ovmf()
    ovmf.copy_vars(work / "OVMF_VARS.fd")
    template = write_template(
        spec_path=spec_for_scripts, work=work, base_image=base, key=key, seed_iso=seed,
        ovmf_code=ovmf.code, ovmf_vars=work / "OVMF_VARS.fd",
    )  # fmt: skip
    env = {**os.environ, "PACKER_CACHE_DIR": str(work / "packer_cache"), "PACKER_LOG": "1",
           "PACKER_LOG_PATH": str(work / "packer.log"), "CHECKPOINT_DISABLE": "1"}  # fmt: skip
    marks: dict[str, float] = {}
    provs: list[tuple[str, float]] = []
    lines: list[str] = []
    with subprocess.Popen(
        ["packer", "build", "-machine-readable", "-color=false", str(template)],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            lines.append(f"{now:8.2f} {line}")
            if ",ui,say," not in line and ",ui,message," not in line:
                continue
            if "halt" in marks and "halted_next" not in marks:
                marks["halted_next"] = now
            if "Provisioning with shell script:" in line:
                provs.append((line.rsplit("/", 1)[-1].strip().removesuffix(".sh"), now))
            elif "halt" not in marks and "Gracefully halting" in line:
                provs.append(("(halt)", now))
            for key_, text in _PACKER_MARKS.items():
                if text and text in line and key_ not in marks:
                    marks[key_] = now
        rc = proc.wait()
    packer_s = time.perf_counter() - t0
    (work / "packer-stdout.log").write_text("".join(lines))
    if rc != 0:
        raise RuntimeError(f"packer build failed ({rc}); see {work / 'packer-stdout.log'} and packer.log")
    disk = work / "output" / "disk.qcow2"
    vhdx = work / "disk.vhdx"
    c0 = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "vhdx", "-o",
                    "subformat=dynamic,block_size=1048576", str(disk), str(vhdx)], check=True)  # fmt: skip
    subprocess.run(["qemu-img", "check", "-f", "vhdx", str(vhdx)], check=True, capture_output=True)
    convert_s = time.perf_counter() - c0
    total = time.perf_counter() - t0

    def span(a: str, b: str) -> float | None:
        return round(marks[b] - marks[a], 1) if a in marks and b in marks else None

    return {
        "side": "packer",
        "compared_s": round(total, 1),
        "total_s": round(total, 1),
        "breakdown_s": {
            "setup (seed, template, packer start)": round(marks.get("retrieve", 0.0), 1),
            "fetch + copy disk + start qemu": span("retrieve", "start_vm"),
            "boot to ssh": span("start_vm", "connected"),
            "guest steps (provisioners)": span("connected", "halt"),
            "seal + power off": span("halt", "halted_next"),
            "packer exit": round(packer_s - marks.get("halted_next", packer_s), 1),
            "vhdx convert + check": round(convert_s, 1),
        },
        "vhdx_bytes": vhdx.stat().st_size,
        "guest_steps": [
            {"id": name, "s": round(nxt - at, 1)}
            for (name, at), (_, nxt) in zip(provs, provs[1:], strict=False)
        ],
        "loadavg_1m": [round(load0[0], 2), round(_load()[0], 2)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default="/tmp/bench-vs-packer")
    ap.add_argument("--lab", default="")
    ap.add_argument("--first", choices=("gmi", "packer"), default="packer")
    args = ap.parse_args()
    if shutil.which("packer") is None:
        sys.exit("packer is not installed (apt-get install -y packer)")
    version = subprocess.run(["packer", "version"], capture_output=True, text=True).stdout.split("\n")[0]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, key = _lab(args)
    results: list[dict[str, Any]] = []
    order = ["packer", "gmi"] if args.first == "packer" else ["gmi", "packer"]
    for r in range(args.rounds):
        for side in order if r % 2 == 0 else order[::-1]:
            d = work / f"{side}-{r + 1}"
            if side == "gmi":
                res = run_gmi(d, base, key)
            else:
                spec = work / "scripts-spec.yaml"
                spec.write_text(SPEC.format(base=base, key=key, out=work / "unused", free_space="zero-fill"))
                res = run_packer(d, base, key, spec)
            res["round"] = r + 1
            results.append(res)
            print(f"round {r + 1} {res['side']}: compared {res['compared_s']} s (total {res['total_s']} s), "
                  f"load {res['loadavg_1m']}", flush=True)  # fmt: skip
            for k, v in res["breakdown_s"].items():
                print(f"    {k:42} {v}")
    gmi = [r["compared_s"] for r in results if r["side"] == "gmi-fsm"]
    pk = [r["compared_s"] for r in results if r["side"] == "packer"]
    ratios = [g / p for g, p in zip(gmi, pk, strict=True)]
    ratio = sum(gmi) / sum(pk)  # all rounds together: the pairs' noise is larger than their difference
    print(f"gmi-fsm / Packer ({version}) wall time, provision..compact vs packer build + vhdx: "
          f"per round {', '.join(f'{x:.2f}' for x in ratios)}; all rounds {ratio:.2f} (goal <= 1.0)")  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(
        json.dumps(
            {
                "benchmark": "vs_packer",
                "packer": version,
                "rounds": args.rounds,
                "gmi_compared_s": gmi,
                "packer_s": pk,
                "ratio": round(ratio, 3),
                "ratio_per_round": [round(x, 3) for x in ratios],
                "goal": "<= 1.0",
                "pass": ratio <= 1.0,
                "gmi_total_s": [r["total_s"] for r in results if r["side"] == "gmi-fsm"],
                "details": str(work / "results.json"),
            }
        )
    )


if __name__ == "__main__":
    main()
