"""Peak RSS of the orchestrator while a guest command streams 200 MiB of output.

A real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py) plays the guest. A child
process (the "orchestrator") runs ONE guest step through the real engine path: a
BuildRecorder on a temp SqliteEventStore, an Engine, an SshTarget; the step's output
goes through OutputCapture (secret masking, sha256, spool file) and into the blob
store, then StepFinished is committed. The command prints base64 text (not
compressible to nothing, like a build log): `base64 /dev/urandom | head -c SIZE`.

The child reports its own VmRSS/VmHWM (/proc/self/status) idle with every import
loaded, after the SSH login, and after the step; the parent cross-checks with
getrusage(RUSAGE_CHILDREN).ru_maxrss. Goal: peak under 100 MB.

Usage: python bench/bench_stream_rss.py [MiB]
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MIB = 1 << 20
GOAL_MB = 100


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(port: int, key: str, user: str, fingerprint: str, work: str, size: int) -> None:
    """The measured process: imports everything a build run imports, then one step."""
    from events.store import SqliteEventStore
    from orchestrator import builds
    from orchestrator.engine import Engine, Outcome
    from orchestrator.recorder import BuildRecorder
    from orchestrator.targets.base import Target, TargetError
    from orchestrator.targets.ssh import SshTarget
    from states.steps import Command, Step, TargetName

    class OneStepHost:
        kind = "bench"

        def __init__(self, ssh: SshTarget, step: Step) -> None:
            self.ssh, self.step = ssh, step

        def plan(self, stage: str) -> list[Step]:
            return [self.step] if stage == self.step.stage else []

        def target(self, name: TargetName) -> Target:
            if name != "guest":
                raise TargetError(f"no {name} target here")
            return self.ssh

        def session_step(self, step: Step) -> Step | None:
            return None

        def abort_steps(self, stage: str) -> list[Step]:
            return []

        async def close(self) -> None:
            await self.ssh.close()

    spec = Path(work) / "spec.yaml"
    spec.write_text("name: bench\nos: {name: Debian, version: '12', family: apt}\nhost: {kind: local}\n")
    store = SqliteEventStore(Path(work) / "events.db")
    build_id = builds.request(store, builds.prepare(spec))
    recorder = BuildRecorder(store, build_id)
    idle = {"rss_kib": _status_kib("VmRSS"), "hwm_kib": _status_kib("VmHWM")}

    async def go() -> dict[str, object]:
        ssh = SshTarget(
            "127.0.0.1", port=port, user=user, key_path=key, pinned_fingerprint=fingerprint,
            on_new_host_key=lambda fp, alg: None,
        )  # fmt: skip
        await ssh.wait_until_reachable(30)
        logged_in = _status_kib("VmRSS")
        step = Step(
            stage="update", name="stream", target="guest", idempotent=True, timeout_s=600,
            command=Command(f"base64 /dev/urandom | head -c {size}", sudo=True),
        )  # fmt: skip
        host = OneStepHost(ssh, step)
        t0 = time.perf_counter()
        result = await Engine(recorder, host).run()
        seconds = time.perf_counter() - t0
        await host.close()
        if result.outcome is not Outcome.SUCCEEDED:
            raise RuntimeError(f"{result.outcome}: {result.message}")
        return {"logged_in_rss_kib": logged_in, "seconds": seconds}

    out = asyncio.run(go())
    finished = [e for e in store.read(build_id) if e.type == "StepFinished"][-1].payload
    stored = recorder.blobs.size(finished["stdout"]["sha256"])
    print(
        json.dumps(
            {
                **idle,
                **out,
                "after_rss_kib": _status_kib("VmRSS"),
                "peak_hwm_kib": _status_kib("VmHWM"),
                "stdout_size": finished["stdout"]["size"],
                "blob_size": stored,
            }
        )
    )
    store.close()


def main() -> None:
    from tests.support.sshd import sshd_unavailable_reason, start_sshd

    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    size = mib * MIB
    why = sshd_unavailable_reason()
    if why:
        sys.exit(f"cannot run: {why}")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as d:
        server = start_sshd(Path(d) / "sshd")
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(server.port), str(server.client_key), server.user,
                 server.host_key_fingerprint, d, str(size)],
                check=True, capture_output=True, text=True, cwd=REPO,
            )  # fmt: skip
            children_maxrss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        finally:
            server.stop()
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["stdout_size"] != size or r["blob_size"] != size:
        sys.exit(f"output not captured whole: {r}")
    peak_mb = r["peak_hwm_kib"] * 1024 / 1e6
    idle_mb = r["rss_kib"] * 1024 / 1e6
    print(
        f"{mib} MiB streamed through SshTarget -> OutputCapture -> blob store in {r['seconds']:.1f} s "
        f"({size / r['seconds'] / 1e6:.0f} MB/s); stdout digest size {r['stdout_size']:,}, blob {r['blob_size']:,}"
    )
    print(
        f"orchestrator RSS: idle (imports loaded) {idle_mb:.1f} MB, after login "
        f"{r['logged_in_rss_kib'] * 1024 / 1e6:.1f} MB, peak (VmHWM) {peak_mb:.1f} MB, "
        f"after {r['after_rss_kib'] * 1024 / 1e6:.1f} MB; getrusage(RUSAGE_CHILDREN) "
        f"{children_maxrss_kib * 1024 / 1e6:.1f} MB; goal < {GOAL_MB} MB; load avg {load0[0]:.2f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "stream_rss",
                "streamed_bytes": size,
                "seconds": round(r["seconds"], 2),
                "idle_rss_mb": round(idle_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "peak_over_idle_mb": round(peak_mb - idle_mb, 1),
                "rusage_children_maxrss_mb": round(children_maxrss_kib * 1024 / 1e6, 1),
                "goal_mb": GOAL_MB,
                "pass": peak_mb < GOAL_MB,
                "loadavg_1m": round(load0[0], 2),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(int(a[0]), a[1], a[2], a[3], a[4], int(a[5]))
    else:
        main()
