"""A secret's value never reaches the database, the logs, the audit or an exception.

The honest route on a local host: the spec's ``guest.password`` is ``env:GMI_TEST_PW``
(a reference; local specs may carry a guest section). ``gmi-fsm run`` resolves it, which
registers the value with the redactor. The hooks are children of the runner, so they
inherit the variable and print its value to stdout and stderr, and one fails with it
as the last line of its stderr (which goes into the step's error text). Whatever the
commands print is captured, masked, hashed and stored: the value must never be stored.
A crash and a resume (which reads the frozen spec, not the file) must mask it too.
"""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest
import structlog
from support.cli import build_ids, run_cli, write_spec

from orchestrator import logs
from orchestrator.secrets import REDACTOR, Secret, SecretError, resolve

SECRET = "Pw-7f3a9c1e-never-store-me"


def _files_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name.startswith("events.db")
    }


def test_secret_never_reaches_db_logs_or_audit(tmp_path: Path) -> None:
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(
        work,
        [
            {
                "name": "say-it",
                "stage": "provision",
                "run": 'echo "pw=$GMI_TEST_PW"; echo "err pw=$GMI_TEST_PW" >&2',
            },
            {
                "name": "fail-with-it",
                "stage": "update",
                "run": 'test -e fixed || { echo "bad password $GMI_TEST_PW" >&2; exit 1; }',
            },
            {
                "name": "say-it-again",
                "stage": "seal",
                "run": 'printf "%s" "$GMI_TEST_PW" | rev; echo "$GMI_TEST_PW"',
            },
        ],
        name="secret",
        guest={"password": "env:GMI_TEST_PW"},
    )
    assert SECRET not in spec.read_text()
    env = {"GMI_TEST_PW": SECRET}
    outputs: list[str] = []

    def cli(*args: str | Path, extra: dict[str, str] | None = None) -> int:
        proc = run_cli(*args, db=db, env={**env, **(extra or {})})
        outputs.extend([proc.stdout, proc.stderr])
        return proc.returncode

    # 1. Fails in update, with the secret as its last line of stderr.
    assert cli("run", spec, "-v") == 4
    (build_id,) = build_ids(db)
    assert "bad password ***" in outputs[-1]
    (work / "fixed").touch()
    # 2. Resume, and crash right after attaching (BuildResumed)...
    seqs = len(json.loads(run_cli("history", build_id, "--json", db=db).stdout))
    assert (
        cli("run", "--resume", build_id, extra={"GMI_FSM_FAULT_KILL_AFTER_SEQ": str(seqs + 1)})
        == -signal.SIGKILL
    )
    # 3. ...and resume again: this run never read the spec file, only the frozen spec,
    # and its hooks print the secret again.
    assert cli("run", "--resume", build_id) == 0
    for args in (
        ("status", build_id, "--json"),
        ("history", build_id),
        ("audit", build_id),
        ("replay", build_id, "--json"),
        ("verify", build_id),
    ):
        assert cli(*args) == 0, outputs[-1]

    # The commands really printed it, and it was masked: the mask is there, the value is not.
    history = json.loads(run_cli("history", build_id, "--json", db=db).stdout)
    audit = json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)
    outputs.extend([json.dumps(history), json.dumps(audit)])
    say = next(c for c in audit["commands"] if c["step"] == "hook.after.say-it")
    assert say["stdout"]["size"] == len("pw=***\n")
    heads = [e["stdout"]["head"] for e in history if e["type"] == "StepFinished" and e.get("stdout")]
    assert "pw=***\n" in heads
    assert f"{SECRET[::-1]}***\n" in heads  # reversed, it is not the secret; as is, it is masked
    errors = [e["error"] for e in history if e["type"] == "StepFinished" and e.get("error")]
    assert errors == ["exit status 1: bad password ***"]

    for text in outputs:
        assert SECRET not in text
    for name, data in _files_bytes(work).items():
        assert SECRET.encode() not in data, f"the secret is in {name}"
        assert SECRET.encode("utf-16-le") not in data
    assert b"env:GMI_TEST_PW" in _files_bytes(work)["events.db"] + _files_bytes(work).get(
        "events.db-wal", b""
    )


def test_resume_without_the_secret_says_which_reference(tmp_path: Path) -> None:
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(
        work, [{"name": "x", "stage": "update", "run": "exit 1"}], guest={"password": "env:GMI_TEST_PW"}
    )
    assert run_cli("run", spec, db=db, env={"GMI_TEST_PW": SECRET}).returncode == 4
    (build_id,) = build_ids(db)
    proc = run_cli("run", "--resume", build_id, db=db)
    assert proc.returncode == 11
    assert "guest.password: environment variable GMI_TEST_PW is not set" in proc.stderr
    assert "hint: export GMI_TEST_PW=..." in proc.stderr


def test_secret_objects_and_errors_do_not_show_the_value(tmp_path: Path) -> None:
    import os  # noqa: PLC0415

    os.environ["GMI_TEST_PW_INPROC"] = SECRET
    try:
        secret = resolve("env:GMI_TEST_PW_INPROC", where="guest.password")
    finally:
        del os.environ["GMI_TEST_PW_INPROC"]
    assert isinstance(secret, Secret)
    assert secret.reveal() == SECRET
    assert SECRET not in repr(secret)
    assert SECRET not in str(secret)
    assert SECRET not in f"{secret}"
    assert REDACTOR.text(f"x{SECRET}y") == "x***y"
    with pytest.raises(SecretError) as info:
        resolve("env:GMI_TEST_PW_INPROC", where="guest.password")
    assert "GMI_TEST_PW_INPROC" in str(info.value)
    assert SECRET not in str(info.value)
    (tmp_path / "pw").write_text(SECRET + "\n")
    from_file = resolve("file:pw", where="guest.password", base_dir=tmp_path)
    assert from_file.reveal() == SECRET
    assert SECRET not in repr(from_file)


def test_stream_redactor_masks_a_secret_split_across_chunks() -> None:
    REDACTOR.add(SECRET)
    data = f"a{SECRET}b{SECRET}".encode()
    for size in (1, 2, 3, 5, 7, len(SECRET) - 1, len(SECRET), len(SECRET) + 1):
        stream = REDACTOR.stream()
        out = b"".join(stream.feed(data[i : i + size]) for i in range(0, len(data), size)) + stream.flush()
        assert out == b"a***b***", size


def _leaky_frame(log: structlog.typing.FilteringBoundLogger) -> None:
    password = SECRET  # a local variable holding the secret
    try:
        raise RuntimeError(f"login failed for {password}")
    except RuntimeError:
        log.exception("cannot log in", attempt=["user", password], context={"pw": password})


def test_structlog_renders_exceptions_without_locals_or_the_secret() -> None:
    REDACTOR.add(SECRET)
    for as_json in (True, False):
        buf = io.StringIO()
        logs.configure(json=as_json, stream=buf)
        _leaky_frame(structlog.get_logger("test"))
        out = buf.getvalue()
        assert "cannot log in" in out
        assert "login failed for ***" in out  # the message is there, masked
        assert "_leaky_frame" in out  # a traceback was rendered
        assert SECRET not in out, out
        assert "password" not in out or "password = " not in out  # no locals
        if as_json:
            record = json.loads(out)
            assert record["context"] == {"pw": "***"}
            frames = record["exception"][0]["frames"]
            assert all("locals" not in f for f in frames)
    logs.configure(json=True)


def test_internal_errors_mask_secrets(tmp_path: Path) -> None:
    """An unexpected exception (a bug) still prints a traceback, masked."""
    script = (
        "import os, sys\n"
        "from orchestrator.secrets import resolve\n"
        "resolve('env:GMI_TEST_PW', where='guest.password')\n"
        "import orchestrator.cli.main as m\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('cannot reach host with ' + os.environ['GMI_TEST_PW'])\n"
        "m.cli.main = boom\n"
        "m.main(['list'])\n"
    )
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from support.cli import cli_env  # noqa: PLC0415

    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=cli_env(tmp_path / "e.db", {"GMI_TEST_PW": SECRET}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "internal error (a bug in gmi-fsm): cannot reach host with ***" in proc.stderr
    assert SECRET not in proc.stderr
