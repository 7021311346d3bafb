"""Containment: nothing a step starts outlives it or gmi-fsm, however deep it forks
and even if it calls setsid; a resume stops what an unfinished attempt left running
(by its command id) before it probes or re-runs the step.

Every test uses real processes, killed for real. The sweeps kill gmi-fsm with
SIGKILL at random moments (seeded: the seed is printed) while the step's effect is
pending in a grandchild or in a setsid'd process, resume at once, and check that the
effect happened exactly once, also after the moment a survivor would have acted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import procs
from tests.support.cli import cli_env, run_cli, write_spec

# The main command waits 4 s; the effect comes from a process it left behind, 2.5 s
# in: late enough that a resume started after an early kill probes before a survivor
# would act (so a survivor shows as a second effect, not as a found one).
GRANDCHILD = 'sh -c \'sleep 2.5; echo once >> "$1"\' gmi "$1" & sleep 4'
SETSID = '(setsid sh -c \'sleep 2.5; echo once >> "$1"\' gmi "$1" &) ; sleep 4'
EFFECT_AT_S = 2.5


def _alive(pattern: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if pattern.encode() in cmdline:
                found.append(int(entry))
    return found


# -- the supervisor on its own -------------------------------------------------------


@pytest.mark.parametrize("script", [GRANDCHILD.replace("sleep 4", "true"), SETSID.replace("sleep 4", "true")])
def test_what_a_command_leaves_running_ends_with_it(tmp_path: Path, script: str) -> None:
    effect = tmp_path / "effect"
    done = procs.run(["sh", "-c", script, "gmi", str(effect)])
    assert done.returncode == 0
    time.sleep(EFFECT_AT_S + 1)
    assert not effect.exists(), "a process left behind by the command did its work after it ended"


def test_a_timeout_stops_the_whole_tree(tmp_path: Path) -> None:
    effect = tmp_path / "effect"
    with pytest.raises(subprocess.TimeoutExpired):
        procs.run(["sh", "-c", SETSID, "gmi", str(effect)], timeout_s=0.5)
    time.sleep(EFFECT_AT_S + 0.5)
    assert not effect.exists()


def test_exit_status_and_signal_are_passed_through(tmp_path: Path) -> None:
    assert procs.run(["sh", "-c", "exit 7"]).returncode == 7
    assert procs.run(["sh", "-c", "kill -TERM $$"]).returncode == -signal.SIGTERM
    with pytest.raises(FileNotFoundError):
        procs.run([str(tmp_path / "no-such-program")])


@pytest.mark.parametrize("script", [GRANDCHILD, SETSID], ids=["grandchild", "setsid"])
def test_kill_9_of_the_parent_ends_the_whole_tree(tmp_path: Path, script: str) -> None:
    effect = tmp_path / "effect"
    marker = f"gmi-containment-{tmp_path.name}"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from orchestrator import procs; "
            "procs.run(['sh', '-c', sys.argv[1] + ' # ' + sys.argv[3], 'gmi', sys.argv[2]])",
            script,
            str(effect),
            marker,
        ],
        env=cli_env(None),
    )
    deadline = time.monotonic() + 10
    while not _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(marker), "the command never started"
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    time.sleep(EFFECT_AT_S + 1)
    assert not effect.exists(), "a process of the command survived the kill -9 of its parent"
    assert not _alive(marker)


# -- kill -9 of gmi-fsm mid-step, then resume ----------------------------------------


def _hook_spec(folder: Path, script: str, effect: Path) -> Path:
    return write_spec(
        folder,
        [
            {
                "name": "effect-from-a-descendant",
                "stage": "update",
                "run": "touch started; " + script,
                "args": [str(effect)],
                # Not idempotent: a second effect is a bug. The check tells whether
                # the effect is there, so an in-doubt attempt is settled by it.
                "check": 'grep -q once "$1"',
            }
        ],
    )


def _kill_mid_step_then_resume(folder: Path, script: str, delay_s: float) -> list[str]:
    effect = folder / "effect"
    spec = _hook_spec(folder, script, effect)
    db = folder / "events.db"
    runner = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", str(spec)],
        cwd=folder,
        env=cli_env(db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (folder / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (folder / "started").exists(), "the step never started"
    time.sleep(delay_s)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    listed = run_cli("list", "--json", db=db)
    (build_id,) = [b["build_id"] for b in __import__("json").loads(listed.stdout)]
    resumed = run_cli("run", "--resume", build_id, db=db, cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    time.sleep(EFFECT_AT_S + 1)  # a survivor would have written by now
    return effect.read_text().splitlines() if effect.exists() else []


@pytest.mark.parametrize("script", [GRANDCHILD, SETSID], ids=["grandchild", "setsid"])
def test_kill_9_at_random_moments_then_resume_gives_one_effect(tmp_path: Path, script: str) -> None:
    seed = int(os.environ.get("GMI_TEST_SEED", time.time()))
    print(f"seed {seed}")
    rng = random.Random(seed)
    # Before and after the moment of the effect (2.5 s after the step started).
    delays = [rng.uniform(0.1, 1.2), rng.uniform(0.1, 1.2), rng.uniform(2.8, 3.8)]
    for n, delay in enumerate(delays):
        lines = _kill_mid_step_then_resume(tmp_path / f"run{n}", script, delay)
        assert lines == ["once"], f"seed {seed}, kill after {delay:.2f} s: effect lines {lines}"


# -- the guest outlives gmi-fsm: a resume stops what is left there ------------------


def _guest_hook_build(folder: Path, sshd, script: str, effect: Path):  # noqa: ANN001, ANN202
    """A Hyper-V build through the SIMULATOR whose guest is the test's real sshd: like
    a real Hyper-V guest, it keeps running when gmi-fsm dies."""
    import yaml

    from tests.support.hyperv_sim import write_build

    b = write_build(folder)
    spec = yaml.safe_load(b.spec_path.read_text())
    spec["guest"] = {"user": sshd.user, "ssh_private_key": f"file:{sshd.client_key}", "ssh_port": sshd.port}
    spec["host"]["simulator"]["guest_address"] = sshd.host
    spec["hooks"] = [
        {
            "name": "effect-in-the-guest",
            "stage": "update",
            "target": "guest",
            "run": f"touch {folder / 'started'}; " + script,
            "args": [str(effect)],
            "check": 'grep -q once "$1"',
        }
    ]
    b.spec_path.write_text(yaml.safe_dump(spec))
    return b


@pytest.mark.sshd
@pytest.mark.parametrize("script", [GRANDCHILD, SETSID], ids=["grandchild", "setsid"])
def test_guest_leftovers_are_stopped_before_the_probe(tmp_path: Path, sshd, script: str) -> None:  # noqa: ANN001
    seed = int(os.environ.get("GMI_TEST_SEED", time.time()))
    rng = random.Random(seed)
    for n in range(2):
        folder = tmp_path / f"run{n}"
        effect = folder / "effect"
        b = _guest_hook_build(folder, sshd, script, effect)
        runner = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "--db", str(b.db), "run", str(b.spec_path)],
            cwd=folder,
            env=cli_env(None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (folder / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (folder / "started").exists(), "the guest step never started"
        delay = rng.uniform(0.1, 1.2)
        time.sleep(delay)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        from orchestrator import builds

        (build_id,) = builds.open_store(b.db).build_ids()
        code, out, err = b.run_json("run", "--resume", build_id, timeout=180)
        assert code == 0, f"seed {seed}: {out} {err[-800:]}"
        time.sleep(EFFECT_AT_S + 1)
        lines = effect.read_text().splitlines() if effect.exists() else []
        assert lines == ["once"], f"seed {seed}, kill after {delay:.2f} s: effect lines {lines}"
        stops = [
            e
            for e in builds.history(builds.open_store(b.db), build_id)
            if e.type == "StepStarted" and e.payload["probe"] and "GMI_COMMAND_ID" in e.payload["command"]
        ]
        assert stops, "the resume did not stop the leftovers of the unfinished attempt in the guest"
