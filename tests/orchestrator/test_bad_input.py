"""Bad input: every case gets a clear message (what, where, how to fix), its documented
exit code (orchestrator/exit_codes.py), and writes NOTHING: no new event, and no
database file where there was none.

We run as root, and root ignores file permissions: the read-only cases use
``chattr +i`` (immutable, which even root cannot write), a path under a regular file,
and /proc (where no file can be created).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.cli import count_events, run_cli, write_spec

from orchestrator.exit_codes import ExitCode

HEADER = 'name: bad\nos: {name: Debian, version: "12", family: apt}\n'
LOCAL = HEADER + "host: {kind: local}\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    """A database with a succeeded build and a failed one, WAL folded in."""
    work = tmp_path_factory.mktemp("base")
    db = work / "events.db"
    ok = run_cli(
        "run", write_spec(work, [{"name": "hi", "stage": "provision", "run": "echo hi"}]), "--json", db=db
    )
    assert ok.returncode == 0, ok.stderr
    failed_spec = write_spec(
        work,
        [{"name": "boom", "stage": "provision", "run": "exit 1"}],
        name="failing",
        filename="failing.yaml",
    )
    failed = run_cli("run", failed_spec, "--json", db=db)
    assert failed.returncode == 4, failed.stderr
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "db": db,
        "ok": json.loads(ok.stdout)["build_id"],
        "failed": json.loads(failed.stdout)["build_id"],
    }


@dataclass
class Case:
    id: str
    argv: list[str]
    code: ExitCode
    says: list[str]
    spec: str | None = None  # written to spec.yaml in the test's folder
    db: str = "none"  # "none": no database exists; "base": a copy of the base database
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "bad-yaml",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        [
            "spec.yaml: the build spec is not valid",
            "spec.yaml:5: (top level): not valid YAML: mapping values are not allowed here",
            "gmi-fsm spec check FILE",
        ],
        spec=LOCAL + "step_timeout_s: 60\ncolour: a: b\n",
    ),
    Case(
        "unclosed-flow-mapping",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:5: (top level): not valid YAML: expected ',' or '}}'"],  # '}}' is format-escaped
        spec=LOCAL + "hooks:\n  - {name: a, stage: provision\n",
    ),
    Case(
        "top-level-not-mapping",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:1: (top level): the top level must be a mapping (key: value)"],
        spec="- just\n- a list\n",
    ),
    Case(
        "empty-file",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["the top level must be a mapping"],
        spec="",
    ),
    Case(
        "wrong-type-number",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:4: step_timeout_s: Input should be a valid number"],
        spec=LOCAL + "step_timeout_s: soon\n",
    ),
    Case(
        "wrong-type-list",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:4: hooks: Input should be a valid list"],
        spec=LOCAL + "hooks: {name: a}\n",
    ),
    Case(
        "bad-name-pattern",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:1: name: String should match pattern"],
        spec='name: "Bad Name!"\nos: {name: Debian, version: "12", family: apt}\nhost: {kind: local}\n',
    ),
    Case(
        "unknown-key",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:5: colour: unknown key (check its spelling; `gmi-fsm spec schema` lists the keys)"],
        spec=LOCAL + "step_timeout_s: 60\ncolour: blue\n",
    ),
    Case(
        "unknown-nested-key",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:6: hooks.0.stg: unknown key"],
        spec=LOCAL + "hooks:\n  - name: a\n    stg: provision\n    stage: provision\n    run: 'true'\n",
    ),
    Case(
        "missing-required-key",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:1: os: required key is missing"],
        spec="name: bad\nhost: {kind: local}\n",
    ),
    Case(
        "unknown-host-kind",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:3: host: unknown kind 'vmware'; use one of: 'local', 'qemu', 'hyperv'"],
        spec=HEADER + "host: {kind: vmware}\n",
    ),
    Case(
        "host-without-kind",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:3: host: required key 'kind' is missing"],
        spec=HEADER + "host: {memory_mib: 1024}\n",
    ),
    Case(
        "unknown-stage-in-hook",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:6: hooks.0.stage: unknown stage 'provisoin'; stages are: provision, install_os"],
        spec=LOCAL + "hooks:\n  - name: a\n    stage: provisoin\n    run: 'true'\n",
    ),
    Case(
        "duplicate-hook",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["hook names must be unique per stage: provision/a"],
        spec=LOCAL
        + "hooks:\n"
        + "  - {name: a, stage: provision, run: 'true'}\n"
        + "  - {name: a, stage: provision, run: 'true'}\n",
    ),
    Case(
        "guest-hook-on-local-host",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["guest hooks need a host with a guest (qemu or hyperv)"],
        spec=LOCAL + "hooks:\n  - {name: a, stage: provision, target: guest, run: 'true'}\n",
    ),
    Case(
        "iso-install-of-ubuntu-on-qemu",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        [
            "the QEMU host installs from an ISO with the Debian installer only, not Ubuntu",
            "cloud image as source.base_image",
        ],
        spec='name: bad\nos: {name: Ubuntu, version: "24.04", family: apt}\nhost: {kind: qemu}\n'
        + "source: {iso: u.iso}\nguest: {user: u, ssh_private_key: 'file:k'}\n",
    ),
    Case(
        "iso-install-with-direct-kernel-firmware",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["an ISO install needs host.firmware: uefi"],
        spec=HEADER
        + "host: {kind: qemu, firmware: direct-kernel}\n"
        + "source: {iso: d.iso}\nguest: {user: u, ssh_private_key: 'file:k'}\n",
    ),
    Case(
        "installer-proxy-with-credentials",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["source.mirror_proxy: give the proxy as http://HOST:PORT, without credentials"],
        spec=HEADER
        + "host: {kind: qemu}\n"
        + "source: {iso: d.iso, mirror_proxy: 'http://bob:pw@proxy:3128'}\n"
        + "guest: {user: u, ssh_private_key: 'file:k'}\n",
    ),
    Case(
        "plain-text-password",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        [
            "spec.yaml:4: guest.password: a plain-text secret is not allowed in a spec; "
            "write env:NAME or file:PATH"
        ],
        spec=LOCAL + "guest: {password: hunter2-plain}\n",
    ),
    Case(
        "env-reference-unset",
        ["run", "{spec}"],
        ExitCode.SECRET_ERROR,
        [
            "guest.password: environment variable GMI_TEST_SURELY_UNSET is not set",
            "export GMI_TEST_SURELY_UNSET=",
        ],
        spec=LOCAL + "guest: {password: 'env:GMI_TEST_SURELY_UNSET'}\n",
    ),
    Case(
        "file-reference-missing",
        ["run", "{spec}"],
        ExitCode.SECRET_ERROR,
        ["guest.ssh_private_key: cannot read secret file", "keys/missing_key: No such file or directory"],
        spec=LOCAL + "guest: {ssh_private_key: 'file:keys/missing_key'}\n",
    ),
    Case(
        "missing-spec-file",
        ["run", "{tmp}/nope.yaml"],
        ExitCode.SPEC_INVALID,
        ["nope.yaml: the build spec is not valid", "file not found", "check the path"],
    ),
    Case(
        "spec-check-bad",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:3: host"],
        spec=HEADER + "host: {kind: x}\n",
    ),
    *[
        Case(
            f"unknown-build-{cmd}",
            [*cmd.split(), "no-such-build"],
            ExitCode.UNKNOWN_BUILD,
            ["no build 'no-such-build' in", "`gmi-fsm list` shows the builds in this database"],
            db="base",
        )
        for cmd in ("status", "history", "audit", "replay", "resume", "run --resume", "abort", "verify")
    ],
    Case(
        "no-database-for-a-read",
        ["status", "some-build"],
        ExitCode.STORE_ERROR,
        ["event database {tmp}/events.db does not exist", "give the right --db (or GMI_FSM_DB)"],
    ),
    Case(
        "not-a-sqlite-file",
        ["run", "--resume", "x"],
        ExitCode.STORE_ERROR,
        [
            "{tmp}/events.db is not a gmi-fsm event database (file is not a database)",
            "point --db at the right file",
        ],
        db="junk",
    ),
    Case(
        "another-tools-sqlite-db",
        ["run", "{spec}"],
        ExitCode.STORE_ERROR,
        ["is not a gmi-fsm event database (it holds other tables: contacts); nothing was changed"],
        spec=LOCAL,
        db="foreign",
    ),
    Case(
        "db-under-a-regular-file",
        ["--db", "{tmp}/afile/events.db", "run", "{spec}"],
        ExitCode.STORE_ERROR,
        [
            "cannot create the folder for the event database",
            "afile is a file, not a folder",
            "choose a writable",
        ],
        spec=LOCAL,
    ),
    Case(
        "db-in-proc",
        ["--db", "/proc/gmi-fsm-test.db", "run", "{spec}"],
        ExitCode.STORE_ERROR,
        ["event database /proc/gmi-fsm-test.db cannot be written or opened", "choose another --db"],
        spec=LOCAL,
    ),
    Case(
        "bad-busy-timeout",
        ["run", "--resume", "x"],
        ExitCode.STORE_ERROR,
        ["GMI_FSM_BUSY_TIMEOUT_MS='soon' is not a whole number of milliseconds"],
        db="base",
        env={"GMI_FSM_BUSY_TIMEOUT_MS": "soon"},
    ),
    Case(
        "spec-and-resume",
        ["run", "{spec}", "--resume", "{ok}"],
        ExitCode.USAGE,
        ["SPEC was given with --resume: a resumed build uses its frozen spec", "add --update-spec"],
        spec=LOCAL,
        db="base",
    ),
    Case(
        "run-without-anything", ["run"], ExitCode.USAGE, ["give a SPEC file to start a build, or --resume ID"]
    ),
    Case("verify-without-id", ["verify"], ExitCode.USAGE, ["give a build ID or --all"], db="base"),
    Case(
        "verify-id-and-all",
        ["verify", "{ok}", "--all"],
        ExitCode.USAGE,
        ["give a build ID or --all"],
        db="base",
    ),
    Case(
        "decision-on-a-build-not-paused",
        ["resume", "{failed}", "--decision", "skip"],
        ExitCode.USAGE,
        ["build {failed} is not paused (it is failed); no decision needed", "without --decision"],
        db="base",
    ),
    Case(
        "bad-decision-word",
        ["resume", "{failed}", "--decision", "maybe"],
        ExitCode.USAGE,
        ["Invalid value for '--decision'", "'maybe' is not one of 'retry', 'skip', 'abort'"],
        db="base",
    ),
    Case(
        "run-a-succeeded-build",
        ["run", "--resume", "{ok}"],
        ExitCode.BUILD_ENDED,
        ["build {ok} has already succeeded", "start a new build with `gmi-fsm run SPEC`"],
        db="base",
    ),
    Case(
        "resume-a-succeeded-build",
        ["resume", "{ok}"],
        ExitCode.BUILD_ENDED,
        ["has already succeeded"],
        db="base",
    ),
    Case(
        "abort-a-succeeded-build",
        ["abort", "{ok}"],
        ExitCode.BUILD_ENDED,
        ["has already succeeded"],
        db="base",
    ),
    Case(
        "unknown-option",
        ["list", "--colour"],
        ExitCode.USAGE,
        ["No such option '--colour'", "Try 'gmi-fsm list --help' for help"],
        db="base",
    ),
    Case("unknown-command", ["frobnicate"], ExitCode.USAGE, ["No such command 'frobnicate'"]),
    Case(
        "infinite-timeout",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:4: step_timeout_s: Input should be a finite number"],
        spec=LOCAL + "step_timeout_s: .inf\n",
    ),
    Case(
        "nan-retry-delay",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:8: hooks.0.retry_delay_s: Input should be a finite number"],
        spec=LOCAL + "hooks:\n  - name: a\n    stage: provision\n    run: 'true'\n    retry_delay_s: .nan\n",
    ),
    Case(
        "huge-hook-timeout",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:8: hooks.0.timeout_s: Input should be less than or equal to 604800"],
        spec=LOCAL + "hooks:\n  - name: a\n    stage: provision\n    run: 'true'\n    timeout_s: 1.0e+300\n",
    ),
    Case(
        "huge-retry-delay",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:8: hooks.0.retry_delay_s: Input should be less than or equal to 3600"],
        spec=LOCAL + "hooks:\n  - name: a\n    stage: provision\n    run: 'true'\n    retry_delay_s: 1.0e+9\n",
    ),
    Case(
        "huge-hyperv-memory-and-disk",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        [
            "spec.yaml:3: host.memory_mib: Input should be less than or equal to 12582912",
            "spec.yaml:3: host.disk_gib: Input should be less than or equal to 65536",
        ],
        spec=HEADER
        + "host: {kind: hyperv, host: h, vm_path: v, export_path: e, memory_mib: 99999999999999999999, "
        + "disk_gib: 99999999999999999999}\n"
        + "source: {iso: d.iso}\nguest: {user: u, ssh_private_key: 'file:k'}\n",
    ),
    Case(
        "huge-qemu-timeout",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:3: host.boot_timeout_s: Input should be less than or equal to 604800"],
        spec=HEADER
        + "host: {kind: qemu, boot_timeout_s: 1.0e+20}\n"
        + "source: {base_image: d.qcow2}\nguest: {user: u, ssh_private_key: 'file:k'}\n",
    ),
    Case(
        "5000-digit-integer",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:4: (top level): not valid YAML: a number of 5000 digits is too long (at most 100)"],
        spec=LOCAL + "step_timeout_s: " + "7" * 5000 + "\n",
    ),
    Case(
        "deeply-nested-yaml",
        ["run", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["spec.yaml:4: (top level): not valid YAML: the spec nests deeper than 64 levels"],
        spec=LOCAL + "x: " + "[" * 100_000 + "]" * 100_000 + "\n",
    ),
    Case(
        "deeply-nested-block-yaml",
        ["spec", "check", "{spec}"],
        ExitCode.SPEC_INVALID,
        ["not valid YAML: the spec nests deeper than 64 levels"],
        spec=LOCAL + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
    ),
    Case(
        "fault-injection-not-a-number",
        ["run", "{spec}"],
        ExitCode.STORE_ERROR,
        [
            "GMI_FSM_FAULT_KILL_AFTER_SEQ='soon' is not a whole number",
            "unset GMI_FSM_FAULT_KILL_AFTER_SEQ",
        ],
        spec=LOCAL,
        env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": "soon"},
    ),
    Case(
        "fault-injection-negative",
        ["run", "--resume", "{failed}"],
        ExitCode.STORE_ERROR,
        ["GMI_FSM_FAULT_KILL_AFTER_SEQ='-3' is not a whole number"],
        db="base",
        env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": "-3"},
    ),
    Case(
        "replay-until-negative",
        ["replay", "{ok}", "--until", "-5"],
        ExitCode.USAGE,
        ["Invalid value for '--until': -5 is not in the range x>=1."],
        db="base",
    ),
    Case(
        "replay-until-zero",
        ["replay", "{ok}", "--until", "0"],
        ExitCode.USAGE,
        ["Invalid value for '--until': 0 is not in the range x>=1."],
        db="base",
    ),
    Case(
        "replay-until-garbage",
        ["replay", "{ok}", "--until", "soon"],
        ExitCode.USAGE,
        ["'soon' is not a valid integer"],
        db="base",
    ),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base: dict[str, str | Path], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    (tmp_path / "afile").write_text("a regular file\n")
    if case.db == "base":
        shutil.copyfile(base["db"], db)
    elif case.db == "junk":
        db.write_text("this is not a database\n")
    elif case.db == "foreign":
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
        conn.close()
    if case.spec is not None:
        (tmp_path / "spec.yaml").write_text(case.spec)
    subst = {
        "spec": str(tmp_path / "spec.yaml"),
        "tmp": str(tmp_path),
        "ok": str(base["ok"]),
        "failed": str(base["failed"]),
    }
    argv = [a.format(**subst) for a in case.argv]
    events_before, digest_before = count_events(db) if case.db in ("base",) else 0, _digest(db)

    proc = run_cli(*argv, db=db, env=case.env)

    assert proc.returncode == int(case.code), f"{case.id}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for text in case.says:
        assert text.format(**subst) in proc.stderr, f"{case.id}: {text!r} not in:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    if case.code != ExitCode.USAGE or "give" in proc.stderr or "is not paused" in proc.stderr:
        assert proc.stderr.startswith(("error: ", "Usage:")), proc.stderr
    # Nothing written.
    if case.db == "none":
        assert not db.exists(), f"{case.id} created {db}"
    elif case.db == "base":
        assert count_events(db) == events_before
    else:
        assert _digest(db) == digest_before
    assert proc.stdout == "" or case.code == ExitCode.USAGE


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths made immutable with chattr +i (undone at teardown)."""
    paths: list[Path] = []
    yield paths
    for p in paths:
        subprocess.run(["chattr", "-i", str(p)], check=False)


def _chattr(path: Path, immutable: list[Path]) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {proc.stderr.strip()}")
    immutable.append(path)


def test_immutable_database_file(base: dict[str, str | Path], tmp_path: Path, immutable: list[Path]) -> None:
    """Root cannot write a file with the immutable attribute: the run stops before
    its first event and says the file cannot be written."""
    db = tmp_path / "events.db"
    shutil.copyfile(base["db"], db)
    before = _digest(db)
    spec = write_spec(tmp_path / "w", [])
    _chattr(db, immutable)
    proc = run_cli("run", spec, db=db)
    assert proc.returncode == ExitCode.STORE_ERROR, proc.stderr
    assert (
        f"event database {db} cannot be written or opened (attempt to write a readonly database)"
        in proc.stderr
    )
    assert "check the file's and its folder's permissions" in proc.stderr
    assert _digest(db) == before
    # Reading still works.
    status = run_cli("status", str(base["ok"]), "--json", db=db)
    assert status.returncode == 0, status.stderr


def test_immutable_database_folder(tmp_path: Path, immutable: list[Path]) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    spec = write_spec(tmp_path / "w", [])
    _chattr(folder, immutable)
    proc = run_cli("run", spec, db=folder / "events.db")
    assert proc.returncode == ExitCode.STORE_ERROR, proc.stderr
    assert (
        f"event database {folder / 'events.db'} cannot be written or opened (unable to open database file)"
        in (proc.stderr)
    )
    assert list(folder.iterdir()) == []


def test_locked_database(base: dict[str, str | Path], tmp_path: Path) -> None:
    """Another connection holds an exclusive write lock: writers give up after the busy
    timeout with a clear message; nothing is written."""
    db = tmp_path / "events.db"
    shutil.copyfile(base["db"], db)
    before = count_events(db)
    spec = write_spec(tmp_path / "w", [])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        env = {"GMI_FSM_BUSY_TIMEOUT_MS": "200"}
        for argv in (
            ["run", str(spec)],
            ["run", "--resume", str(base["failed"])],
            ["abort", str(base["failed"])],
        ):
            proc = run_cli(*argv, db=db, env=env)
            assert proc.returncode == ExitCode.STORE_ERROR, (argv, proc.stderr)
            assert f"event database {db} is locked by another process (database is locked)" in proc.stderr
            assert "raise GMI_FSM_BUSY_TIMEOUT_MS" in proc.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count_events(db) == before
    # Once the lock is gone, the same database works.
    assert run_cli("status", str(base["failed"]), db=db).returncode == 0


def _limited(max_bytes: int) -> None:
    """preexec_fn: cap the child's address space, so reading a spec without a size
    cap fails here instead of eating the machine's memory."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


SPEC_FILES = {
    # kind: (how to make it, what the message says)
    "dev-zero": (lambda tmp: Path("/dev/zero"), "/dev/zero: is not a regular file (a character device)"),
    "dev-null": (lambda tmp: Path("/dev/null"), "/dev/null: is not a regular file (a character device)"),
    "fifo": (lambda tmp: _fifo(tmp / "spec.fifo"), "spec.fifo: is not a regular file (a FIFO)"),
    "folder": (lambda tmp: tmp, "is not a regular file (a folder)"),
    "huge-file": (lambda tmp: _huge(tmp / "huge.yaml"), "huge.yaml: is larger than 1048576 bytes"),
}


def _fifo(path: Path) -> Path:
    import os

    os.mkfifo(path)
    return path


def _huge(path: Path) -> Path:
    with path.open("w") as f:
        f.write(LOCAL)
        for _ in range(40_000):
            f.write("# " + "a spec has no business being this long " * 2 + "\n")
    return path


@pytest.mark.parametrize("command", ["spec check", "run"])
@pytest.mark.parametrize("kind", sorted(SPEC_FILES))
def test_spec_that_is_not_a_small_regular_file(kind: str, command: str, tmp_path: Path) -> None:
    """/dev/zero, a FIFO no one writes to, a folder, a 3 MB file: a clear message at
    once, in bounded memory (the child's address space is capped at 1 GiB), and no
    database created."""
    import time

    from support.cli import CLI, cli_env

    make, says = SPEC_FILES[kind]
    path = make(tmp_path)
    db = tmp_path / "events.db"
    t0 = time.monotonic()
    proc = subprocess.run(
        [*CLI, *command.split(), str(path)],
        env=cli_env(db),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=lambda: _limited(1 << 30),
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == ExitCode.SPEC_INVALID, (proc.returncode, proc.stderr[-2000:])
    assert says in proc.stderr, proc.stderr
    assert "hint: " in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 20
    assert not db.exists()


def test_secret_file_that_is_a_fifo(tmp_path: Path) -> None:
    """A ``file:`` secret naming a FIFO no one writes to: refused at once (an open
    would block forever), exit 11, nothing written."""
    import os

    os.mkfifo(tmp_path / "key.fifo")
    spec = tmp_path / "spec.yaml"
    spec.write_text(LOCAL + "guest: {ssh_private_key: 'file:key.fifo'}\n")
    db = tmp_path / "events.db"
    proc = run_cli("run", spec, db=db, timeout=30)
    assert proc.returncode == ExitCode.SECRET_ERROR, proc.stderr
    assert f"guest.ssh_private_key: secret file {tmp_path / 'key.fifo'} is not a regular file (a FIFO)" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not db.exists()
