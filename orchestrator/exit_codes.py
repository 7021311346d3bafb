"""The documented exit codes of ``gmi-fsm`` (docs/cli.md lists them too; a test keeps
the two in step)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: please report it with the traceback it printed
    USAGE = 2  # a wrong command line (click's own code)
    SPEC_INVALID = 3  # the spec file is missing, not YAML, or not a valid spec
    BUILD_FAILED = 4  # a step failed; fix the cause and `gmi-fsm run --resume ID`
    BUILD_PAUSED = 5  # an operator must decide: `gmi-fsm resume ID --decision ...`
    BUILD_BUSY = 6  # another runner drives this build right now
    UNKNOWN_BUILD = 7  # no such build id in the database
    STORE_ERROR = 8  # the database is locked, read-only, or not ours
    VERIFY_FAILED = 9  # the hash chain is broken or the stream is not a legal build
    BUILD_ENDED = 10  # the build already succeeded or was aborted: nothing to do
    SECRET_ERROR = 11  # a secret reference (env:/file:) could not be resolved
    VALIDATION_FAILED = 12  # `gmi-fsm validate` found the package not acceptable
    INSPECT_UNAVAILABLE = 13  # `validate --inspect` could not look inside the disk (no libguestfs)
    DISK_FULL = 14  # the disk holding the event database is full; free space, then resume
    NOT_IMPORTABLE = 15  # a valid disk-only GMI: vmgenie cannot import it until finished on Hyper-V
    HOST_CHECK_FAILED = 16  # `hyperv check` found the host not ready (each failed item names its fix)
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM; resumable with --resume


DESCRIPTIONS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL: "internal error (a bug); please report it with the traceback it printed",
    ExitCode.USAGE: "wrong command line (also: `replay --until` below 1, `verify --against` a file that is "
    "not this build's event log)",
    ExitCode.SPEC_INVALID: "the spec file is missing, not a regular file of at most 1 MiB, not YAML (or "
    "nested deeper than 64 levels, or with a number of over 100 digits), or not a valid spec (the field "
    "and line are named; .inf, NaN and out-of-range numbers included), or its disk to finish on Hyper-V "
    "(source.gmi_package / source.vhdx) is missing or not a disk-only GMI / VHDX of the spec's OS",
    ExitCode.BUILD_FAILED: "a step failed; fix the cause, then `gmi-fsm run --resume ID`",
    ExitCode.BUILD_PAUSED: "paused: an operator must decide with `gmi-fsm resume ID --decision`",
    ExitCode.BUILD_BUSY: "another runner, decision or abort holds this build (whatever path named the "
    "database); nothing was read, written or sent",
    ExitCode.UNKNOWN_BUILD: "no build with that id in the database",
    ExitCode.STORE_ERROR: "the event database is locked, read-only, not a gmi-fsm database, has more than "
    "one name (hard links, or open in another process by another path), or a GMI_FSM_* setting is invalid",
    ExitCode.VERIFY_FAILED: "the event log fails verification (hash chain, recorded head, stored outputs, "
    "package records, `--against`) or its events are not a legal build: nothing ran; `status` and `replay` "
    'say "tampered"',
    ExitCode.BUILD_ENDED: "the build has already succeeded or been aborted",
    ExitCode.SECRET_ERROR: "a secret reference (env:NAME / file:PATH) could not be resolved",
    ExitCode.VALIDATION_FAILED: "the GMI package did not pass validation",
    ExitCode.INSPECT_UNAVAILABLE: "the package passed, but --inspect could not look inside the disk "
    "(libguestfs is not installed)",
    ExitCode.DISK_FULL: "the disk that holds the event database is full; nothing half-written: free space, "
    "then `gmi-fsm run --resume ID`",
    ExitCode.NOT_IMPORTABLE: "a valid disk-only GMI: not importable by vmgenie until it is finished on a "
    "Hyper-V host",
    ExitCode.HOST_CHECK_FAILED: "`gmi-fsm hyperv check` found the Hyper-V host not ready for a build "
    "(each failed item names its fix)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C or SIGTERM; the build is resumable",
}
