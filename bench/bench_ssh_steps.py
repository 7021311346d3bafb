"""Per-step cost of a guest command: gmi-fsm's engine vs raw asyncssh vs one `ssh` per command.

Same run, same real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py), same key, N
short commands (`echo x`) three ways, alternated over several rounds so machine load
hits every side:

  (a) gmi-fsm: the real engine path. A BuildRecorder on a temp SqliteEventStore and an
      Engine whose host plans N guest steps on an SshTarget. Each step is a committed
      StepStarted, the command (sent as gmi-fsm sends it: `GMI_COMMAND_ID=<id> sh -c
      'echo x' gmi`), its output captured (masked, hashed; a blob only past 4 KiB) and
      a committed StepFinished. The SSH login is done before timing (the engine's
      session step), as (b) connects before timing.
  (b) raw asyncssh: one connection, N `conn.run("echo x")`.
  (c) the `ssh` binary once per command (N processes, a handshake each).

Each round runs PAIRS (a)/(b) pairs back to back (their order alternating) and one (c):
(a) and (b) take about a second each, so a load spike lasting a second can swing one
sample by 2x; the ratio reported is the median over every pair of the pair's own
(a)/(b), beside the ratio of the medians.

The engine run also records the 12 stage transitions (StageEntered/StageCompleted)
and BuildSucceeded: "steps" time is first StepStarted -> last StepFinished (what the
per-step goal is about), "run" time is the whole Engine.run().

The sshd gives sessions an empty HOME (`SetEnv HOME=...`): this machine's root
~/.bashrc runs `pyenv init` (~100+ ms), which bash sources for every SSH command and
which no guest has; set BENCH_SSH_REAL_HOME=1 to keep it (it adds the same cost to all
three sides and shrinks (c)/(a)).

Goals: (a)/(b) <= 1.5 and (c)/(a) >= 10.
Usage: python bench/bench_ssh_steps.py [N] [ROUNDS] [PAIRS]  (defaults 200, 3, 3)
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncssh  # noqa: E402

from events.store import SqliteEventStore  # noqa: E402
from orchestrator import builds  # noqa: E402
from orchestrator.engine import Engine, Outcome  # noqa: E402
from orchestrator.recorder import BuildRecorder  # noqa: E402
from orchestrator.targets.base import Target, TargetError  # noqa: E402
from orchestrator.targets.ssh import SshTarget, remote_command_line  # noqa: E402
from states.steps import Command, Step, TargetName  # noqa: E402
from tests.support.sshd import SshdServer, sshd_unavailable_reason  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PAIRS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
COMMAND = "echo x"
STAGE = "update"


REAL_HOME = os.environ.get("BENCH_SSH_REAL_HOME") == "1"


class GuestLikeSshd(SshdServer):
    """The test sshd, with an empty HOME for sessions unless BENCH_SSH_REAL_HOME=1."""

    def _write_config(self) -> Path:
        config = super()._write_config()
        if not REAL_HOME:
            home = self.workdir / "home"
            home.mkdir(exist_ok=True)
            config.write_text(config.read_text() + f"SetEnv HOME={home}\n")
        return config


class StepsHost:
    """A Host (orchestrator/hosts/base.py) whose only work is N guest steps in one stage."""

    kind = "bench"

    def __init__(self, ssh: SshTarget, n: int) -> None:
        self._ssh = ssh
        self._steps = [
            Step(stage=STAGE, name=f"cmd-{i:04d}", target="guest", command=Command(COMMAND), idempotent=True)
            for i in range(n)
        ]

    def plan(self, stage: str) -> list[Step]:
        return self._steps if stage == STAGE else []

    def target(self, name: TargetName) -> Target:
        if name != "guest":
            raise TargetError(f"no {name} target here")
        return self._ssh

    def session_step(self, step: Step) -> Step | None:
        return None

    def abort_steps(self, stage: str) -> list[Step]:
        return []

    async def close(self) -> None:
        await self._ssh.close()


def _ssh_target(server: SshdServer) -> SshTarget:
    return SshTarget(
        server.host,
        port=server.port,
        user=server.user,
        key_path=server.client_key,
        pinned_fingerprint=server.host_key_fingerprint,
        on_new_host_key=lambda fp, alg: None,
    )


async def run_gmi(server: SshdServer, work: Path) -> tuple[float, float]:
    """(steps seconds, whole run seconds) for N steps through the engine."""
    spec = work / "spec.yaml"
    spec.write_text("name: bench\nos: {name: Debian, version: '12', family: apt}\nhost: {kind: local}\n")
    db = work / f"events-{time.monotonic_ns()}.db"
    store = SqliteEventStore(db)
    try:
        build_id = builds.request(store, builds.prepare(spec))
        recorder = BuildRecorder(store, build_id)
        marks: list[float] = []

        def listen(ev: object) -> None:
            # Listeners run after each commit. The window opens when the steps' stage
            # has been entered and closes when the last StepFinished is committed: it
            # holds exactly N x (StepStarted commit + command + blob + StepFinished commit).
            kind = getattr(ev, "type", "")
            if kind == "StepFinished" or (kind == "StageEntered" and ev.payload.get("stage") == STAGE):  # type: ignore[attr-defined]
                marks.append(time.perf_counter())

        recorder.listeners.append(listen)
        ssh = _ssh_target(server)
        await ssh.wait_until_reachable(30)  # the session step's login, outside the timing
        host = StepsHost(ssh, N)
        engine = Engine(recorder, host)
        t0 = time.perf_counter()
        result = await engine.run()
        whole = time.perf_counter() - t0
        await host.close()
        if result.outcome is not Outcome.SUCCEEDED:
            raise RuntimeError(f"engine run ended {result.outcome}: {result.message}")
        steps = recorder.state.steps
        if len(steps) != N or any(s.status != "done" for s in steps.values()):
            raise RuntimeError("not every step succeeded")
        return marks[-1] - marks[0], whole
    finally:
        store.close()


async def run_breakdown(server: SshdServer) -> dict[str, float]:
    """Where (a)'s extra time goes: raw asyncssh sending gmi-fsm's command line for the
    same step command, and SshTarget.run with a sink that drops the output (no capture,
    no events)."""
    line = remote_command_line(Command(COMMAND), command_id=secrets.token_hex(8))
    out: dict[str, float] = {}
    async with asyncssh.connect(
        server.host, port=server.port, username=server.user, client_keys=[str(server.client_key)],
        known_hosts=None,
    ) as conn:  # fmt: skip
        t0 = time.perf_counter()
        for _ in range(N):
            await conn.run(line, check=True)
        out["raw_wrapped_line"] = time.perf_counter() - t0
    ssh = _ssh_target(server)
    await ssh.wait_until_reachable(30)
    t0 = time.perf_counter()
    for _ in range(N):
        await ssh.run(Command(COMMAND), timeout_s=60, sink=lambda _s, _d: None)
    out["sshtarget_null_sink"] = time.perf_counter() - t0
    await ssh.close()
    return out


async def run_raw(server: SshdServer) -> float:
    async with asyncssh.connect(
        server.host,
        port=server.port,
        username=server.user,
        client_keys=[str(server.client_key)],
        known_hosts=None,
    ) as conn:
        t0 = time.perf_counter()
        for _ in range(N):
            r = await conn.run(COMMAND, check=True)
            assert r.stdout == "x\n"
        return time.perf_counter() - t0


def run_ssh_binary(server: SshdServer) -> float:
    argv = [
        "ssh", "-i", str(server.client_key), "-p", str(server.port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", f"{server.user}@{server.host}", COMMAND,
    ]  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(N):
        out = subprocess.run(argv, check=True, capture_output=True).stdout
        assert out == b"x\n", out
    return time.perf_counter() - t0


def main() -> None:
    why = sshd_unavailable_reason()
    if why:
        sys.exit(f"cannot run: {why}")
    load0 = os.getloadavg()
    results: dict[str, list[float]] = {
        "gmi_steps": [], "gmi_run": [], "raw": [], "ssh": [], "raw_wrapped_line": [], "sshtarget_null_sink": [],
    }  # fmt: skip
    pair_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as d:
        work = Path(d)
        server = GuestLikeSshd(work / "sshd")
        server.start()
        try:
            asyncio.run(run_raw(server))  # warm-up: page cache, sshd, key parsing
            for r in range(ROUNDS):
                # Alternate the order so a load spike does not always hit the same side.
                for p in range(PAIRS):
                    for side in ["raw", "gmi"] if (r * PAIRS + p) % 2 == 0 else ["gmi", "raw"]:
                        if side == "raw":
                            results["raw"].append(asyncio.run(run_raw(server)))
                        else:
                            steps_s, run_s = asyncio.run(run_gmi(server, work))
                            results["gmi_steps"].append(steps_s)
                            results["gmi_run"].append(run_s)
                    pair_ratios.append(results["gmi_steps"][-1] / results["raw"][-1])
                results["ssh"].append(run_ssh_binary(server))
                for k, v in asyncio.run(run_breakdown(server)).items():
                    results[k].append(v)
                a = statistics.median(results["gmi_steps"][-PAIRS:])
                b = statistics.median(results["raw"][-PAIRS:])
                c = results["ssh"][-1]
                print(
                    f"round {r + 1}: gmi-fsm {a * 1000 / N:.2f} ms/step (whole run "
                    f"{statistics.median(results['gmi_run'][-PAIRS:]):.2f} s), raw asyncssh "
                    f"{b * 1000 / N:.2f} ms/cmd, ssh binary {c * 1000 / N:.1f} ms/cmd; a/b of its "
                    f"{PAIRS} pairs {' '.join(f'{x:.2f}' for x in pair_ratios[-PAIRS:])}, c/a {c / a:.1f}; "
                    f"load {os.getloadavg()[0]:.2f}"
                )
        finally:
            server.stop()
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in results.items()}
    ab = med["gmi_steps"] / med["raw"]
    ab_pairs = statistics.median(pair_ratios)
    ab_run = med["gmi_run"] / med["raw"]
    ca = med["ssh"] / med["gmi_steps"]
    per = {k: round(v * 1000 / N, 3) for k, v in med.items()}
    print(
        f"median over {ROUNDS} rounds ({ROUNDS * PAIRS} (a)/(b) pairs) of {N} commands: "
        f"gmi-fsm {per['gmi_steps']} ms/step "
        f"({per['gmi_run']} ms/step counting the whole engine run), raw asyncssh {per['raw']} ms, "
        f"ssh binary {per['ssh']} ms"
    )
    print(
        f"breakdown of (a): raw asyncssh with gmi-fsm's command line (GMI_COMMAND_ID=.. sh -c ..) "
        f"{per['raw_wrapped_line']} ms, SshTarget.run with a null sink {per['sshtarget_null_sink']} ms, "
        f"full engine step {per['gmi_steps']} ms"
    )
    print(
        f"(a)/(b) = {ab:.2f} (ratio of medians; median of the pairs' ratios {ab_pairs:.2f}, "
        f"range {min(pair_ratios):.2f}-{max(pair_ratios):.2f}; goal <= 1.5; whole run {ab_run:.2f});  "
        f"(c)/(a) = {ca:.1f} (goal >= 10);  "
        f"load avg {load0[0]:.2f} -> {load1[0]:.2f}, {os.cpu_count()} CPUs"
    )
    print(
        json.dumps(
            {
                "benchmark": "ssh_steps",
                "commands": N,
                "rounds": ROUNDS,
                "pairs_per_round": PAIRS,
                "ms_per_command": per,
                "gmi_over_raw": round(ab, 3),
                "gmi_over_raw_pairs_median": round(ab_pairs, 3),
                "gmi_over_raw_pairs": [round(x, 3) for x in pair_ratios],
                "gmi_over_raw_whole_run": round(ab_run, 3),
                "ssh_binary_over_gmi": round(ca, 2),
                "goal": {"gmi_over_raw": "<= 1.5", "ssh_binary_over_gmi": ">= 10"},
                "pass": max(ab, ab_pairs) <= 1.5 and ca >= 10,
                "loadavg_1m": [round(load0[0], 2), round(load1[0], 2)],
                "session_home": "real root ~" if REAL_HOME else "empty",
            }
        )
    )


if __name__ == "__main__":
    main()
