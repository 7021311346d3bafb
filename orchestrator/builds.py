"""The library behind the CLI: start, resume, decide, abort, and read builds.

Every CLI command is one call here, so tests call these directly, without a
subprocess.
"""

from __future__ import annotations

import getpass
import os
import secrets as _random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.errors import StoreError
from events.store import RecordedEvent, SqliteEventStore
from orchestrator.build_errors import BuildEndedError, NotPausedError
from states.projection import BuildState, Projector, fold
from states.stages import PAUSED

# Read commands (status, history, verify...) must start fast: what pulls in pydantic
# (events.model, the spec, the engine) is imported inside the functions that write.
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from events.model import Decision
    from orchestrator.engine import Observer, RunResult
    from orchestrator.integrity import BuildVerification
    from orchestrator.spec import BuildSpec

TOOL_VERSION = "0.1.0"


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def new_build_id(spec_name: str) -> str:
    """Readable and sortable: ``<name>-<utc time>-<random>``."""
    return f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{_random.token_hex(3)}"


def open_store(db: Path, *, readonly: bool = False) -> SqliteEventStore:
    raw = os.environ.get("GMI_FSM_BUSY_TIMEOUT_MS", "5000")
    try:
        timeout = int(raw)
    except ValueError:
        raise StoreError(
            f"GMI_FSM_BUSY_TIMEOUT_MS={raw!r} is not a whole number of milliseconds",
            hint="unset it, or set it like GMI_FSM_BUSY_TIMEOUT_MS=5000",
        ) from None
    if not readonly:
        # Settings the writers use are checked before the database is created.
        from orchestrator.recorder import fault_kill_after_seq  # noqa: PLC0415

        fault_kill_after_seq()
    return SqliteEventStore(db, busy_timeout_ms=timeout, readonly=readonly)


@dataclass(frozen=True, slots=True)
class PreparedBuild:
    spec: BuildSpec
    frozen: dict[str, Any]
    spec_path: Path


def prepare(spec_path: Path) -> PreparedBuild:
    """Validate a spec file (raises SpecError). Writes nothing."""
    from orchestrator.spec import load_spec  # noqa: PLC0415

    spec, frozen = load_spec(spec_path)
    if spec.source is not None and spec.source.finishes_disk:
        # A disk to finish on Hyper-V must be there and be what it claims before a build
        # is requested (raises SpecError, naming the source field).
        from orchestrator.hyperv.finish import check_source  # noqa: PLC0415

        check_source(spec, spec_path.resolve().parent, str(spec_path))
    return PreparedBuild(spec, frozen, spec_path.resolve())


def check_secrets(spec: BuildSpec, base_dir: Path) -> None:
    """Resolve every secret reference now, so a missing one fails before anything
    is written (raises SecretError)."""
    from orchestrator.secrets import resolve  # noqa: PLC0415

    for where, ref in spec.secret_refs():
        resolve(ref, where=where, base_dir=base_dir)


def request(store: SqliteEventStore, prepared: PreparedBuild, build_id: str | None = None) -> str:
    """Append BuildRequested for a new build; return its id."""
    from events.model import BuildRequested  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415
    from orchestrator.spec import spec_sha256  # noqa: PLC0415

    bid = build_id or new_build_id(prepared.spec.name)
    recorder = BuildRecorder(store, bid)
    if recorder.state.events:
        msg = f"build {bid} already exists"
        raise ValueError(msg)
    recorder.record(
        BuildRequested(
            spec=prepared.frozen,
            spec_sha256=spec_sha256(prepared.frozen),
            spec_path=str(prepared.spec_path),
            tool_version=TOOL_VERSION,
            requested_by=who(),
            hostname=socket.gethostname(),
        )
    )
    return bid


def frozen_spec(state: BuildState) -> tuple[BuildSpec, Path]:
    """The spec a build runs with: the copy frozen in its events, and the folder
    relative paths in it are read from."""
    from orchestrator.spec import validate_spec  # noqa: PLC0415

    spec, _ = validate_spec(state.spec, f"build {state.build_id} (frozen spec)")
    return spec, Path(state.spec_path).parent


def runner(db: Path, build_id: str) -> AbstractContextManager[None]:
    """Build ``build_id``'s runner lock (orchestrator/runlock.py), keyed by the database
    file whatever path names it; raises ConcurrencyError if another process holds it.
    Every function here that writes to an existing build takes it (re-entrant), so the
    CLI may take it first, before it opens the store or reads anything."""
    from orchestrator.runlock import runner_lock  # noqa: PLC0415

    return runner_lock(db, build_id)


def load_state(store: SqliteEventStore, build_id: str, *, verified: bool = True) -> BuildState:
    """The build's state, its hash chain and recorded head checked on the way
    (TamperedError at the first bad seq); ``verified=False`` only folds (the audit
    reports a broken chain rather than refusing it)."""
    store.require(build_id)
    return fold(build_id, store.read_verified(build_id) if verified else store.read(build_id))


def require_intact(store: SqliteEventStore, build_id: str) -> None:
    """Before anything runs or is written: the whole of ``verify`` (chain, head, stored
    outputs, records of a later head) must pass, else TamperedError."""
    from orchestrator.integrity import require_intact as check  # noqa: PLC0415

    check(store, build_id)


def change_spec(store: SqliteEventStore, build_id: str, prepared: PreparedBuild) -> None:
    from events.model import SpecChanged  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415
    from orchestrator.spec import spec_sha256  # noqa: PLC0415

    with runner(store.path, build_id):
        store.require(build_id)
        require_intact(store, build_id)
        recorder = BuildRecorder(store, build_id)
        recorder.record(
            SpecChanged(
                spec=prepared.frozen,
                spec_sha256=spec_sha256(prepared.frozen),
                spec_path=str(prepared.spec_path),
                changed_by=who(),
            )
        )


async def run(
    store: SqliteEventStore,
    build_id: str,
    *,
    observer: Observer | None = None,
    engine_hook: Any = None,
) -> RunResult:
    """Run (or resume) a build until it ends or pauses."""
    import asyncio  # noqa: PLC0415 - read commands import this module and must start fast

    from orchestrator.engine import Engine  # noqa: PLC0415
    from orchestrator.hosts.factory import make_host  # noqa: PLC0415 - heavy imports
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415
    from orchestrator.view import BuildView  # noqa: PLC0415

    # One runner per build, taken BEFORE the events are read: a second runner must not
    # mistake the first one's running step for one left in doubt by a crash.
    with runner(store.path, build_id):
        store.require(build_id)
        require_intact(store, build_id)  # nothing runs on a log that fails verification
        recorder = BuildRecorder(store, build_id)
        spec, base_dir = frozen_spec(recorder.state)
        # A resumed run never read the spec file: resolve its secret references again,
        # so their values are known to the redactor before any output is captured.
        check_secrets(spec, base_dir)
        host = make_host(spec, base_dir, BuildView(recorder))
        engine = Engine(
            recorder,
            host,
            observer=observer,
            who=who(),
            hostname=socket.gethostname(),
            tool_version=TOOL_VERSION,
        )
        if engine_hook is not None:
            engine_hook(engine)
        try:
            return await engine.run()
        finally:
            try:
                # Shielded: a second Ctrl-C must not leave the build VM half shut down
                # with its closing step in doubt.
                await asyncio.shield(engine.close_run())
            finally:
                await host.close()


def decide(store: SqliteEventStore, build_id: str, decision: Decision, note: str = "") -> BuildState:
    """Record an operator's decision (retry or skip) on a paused build; an abort goes
    through :func:`abort`, which also cleans up."""
    from events.model import OperatorDecision  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415

    if decision == "abort":
        msg = "an abort is not a decision to record alone: call abort()"
        raise ValueError(msg)
    # Under the runner lock, so of two operators deciding at once exactly one records.
    with runner(store.path, build_id):
        store.require(build_id)
        require_intact(store, build_id)
        recorder = BuildRecorder(store, build_id)
        st = recorder.state
        if st.status != PAUSED:
            raise NotPausedError(
                f"build {build_id} is not paused (it is {st.status}); no decision needed",
                hint=f"run `gmi-fsm resume {build_id}` without --decision",
            )
        stage, _, step = st.paused_step.partition("/")
        recorder.record(
            OperatorDecision(stage=stage, step=step, decision=decision, operator=who(), note=note)
        )
        return recorder.state


def trust_new_host_key(store: SqliteEventStore, build_id: str) -> str:
    """Clear the guest's pinned SSH host key (after the operator checked why it
    changed): the next login pins the new key. Returns the old pin."""
    from events.model import FactRecorded  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415
    from orchestrator.targets.host_keys import HOST_KEY_FACT  # noqa: PLC0415

    with runner(store.path, build_id):
        store.require(build_id)
        require_intact(store, build_id)
        recorder = BuildRecorder(store, build_id)
        old = recorder.state.facts.get(HOST_KEY_FACT, "")
        if old:
            recorder.record(
                FactRecorded(key=HOST_KEY_FACT, value="", source=f"operator {who()}: --trust-new-host-key")
            )
        return old


async def abort(store: SqliteEventStore, build_id: str, reason: str, *, clean_up: bool = True) -> BuildState:
    """Abort a build for good. First, unless ``clean_up`` is off, the host undoes what
    the build left (the build VM, its work disk), each command recorded; a clean-up
    that fails is noted in the reason, and the build is aborted all the same."""
    from events.model import BuildAborted, OperatorDecision  # noqa: PLC0415
    from orchestrator.engine import Engine  # noqa: PLC0415
    from orchestrator.hosts.factory import make_host  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415
    from orchestrator.view import BuildView  # noqa: PLC0415

    with runner(store.path, build_id):
        store.require(build_id)
        require_intact(store, build_id)  # an abort sends clean-up commands and writes
        recorder = BuildRecorder(store, build_id)
        st = recorder.state
        if st.terminal:
            raise BuildEndedError(
                f"build {build_id} has already {st.status}", hint="start a new build with `gmi-fsm run SPEC`"
            )
        problems: list[str] = []
        if clean_up:
            spec, base_dir = frozen_spec(st)
            check_secrets(spec, base_dir)
            host = make_host(spec, base_dir, BuildView(recorder))
            try:
                problems = await Engine(recorder, host, who=who()).clean_up_for_abort()
            finally:
                await host.close()
        if problems:
            reason = f"{reason} (clean-up incomplete: {'; '.join(problems)})"
        st = recorder.state
        if st.status == PAUSED:
            stage, _, step = st.paused_step.partition("/")
            recorder.record(
                OperatorDecision(stage=stage, step=step, decision="abort", operator=who(), note=reason)
            )
        recorder.record(BuildAborted(reason=reason, aborted_by=who()))
        return recorder.state


def history(store: SqliteEventStore, build_id: str) -> Iterator[RecordedEvent]:
    store.require(build_id)
    return store.read(build_id)


def replay(store: SqliteEventStore, build_id: str, until_seq: int | None = None) -> BuildState:
    """Rebuild the state through the machine, checking every move (raises
    CorruptStreamError at the first illegal one). The whole log's chain is checked,
    even past ``until_seq`` (TamperedError)."""
    store.require(build_id)
    projector = Projector(build_id)
    for ev in store.read_verified(build_id):
        if until_seq is None or ev.seq <= until_seq:
            projector.apply(ev)
    return projector.state


def verify(
    store: SqliteEventStore, build_id: str | None, *, against: Path | None = None
) -> list[BuildVerification]:
    """Chain, head, stored outputs and records of a later head of one build (or all);
    ``against`` (one build only) also compares it with an exported event log."""
    from events.errors import UnknownBuildError  # noqa: PLC0415
    from orchestrator.integrity import verify_build  # noqa: PLC0415

    ids = [build_id] if build_id else store.build_ids()
    if build_id and not store.build_ids().count(build_id) and store.head(build_id) is None:
        raise UnknownBuildError(
            f"no build {build_id!r} in {store.path}", hint="`gmi-fsm list` shows the builds in this database"
        )
    return [verify_build(store, b, against=against) for b in ids]
