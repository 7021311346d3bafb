"""Turn library exceptions into user-facing failures with documented exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from orchestrator.cli.main import fail
from orchestrator.exit_codes import ExitCode


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    # Imports here, not at module level: each command pays only for what it uses.
    from events.errors import (  # noqa: PLC0415
        ConcurrencyError,
        CorruptStreamError,
        DiskFullError,
        StoreError,
        TamperedError,
        UnknownBuildError,
    )
    from orchestrator.build_errors import BuildEndedError, NotPausedError  # noqa: PLC0415
    from orchestrator.secrets import SecretError  # noqa: PLC0415
    from orchestrator.spec_errors import SpecError  # noqa: PLC0415

    try:
        yield
    except TamperedError as exc:
        fail(
            f"{exc}; nothing was run or written",
            ExitCode.VERIFY_FAILED,
            f"`gmi-fsm verify {exc.build_id}` shows every problem; the log cannot be trusted: "
            "restore the database from a backup, or start a new build",
        )
    except NotPausedError as exc:
        fail(str(exc), ExitCode.USAGE, exc.hint)
    except BuildEndedError as exc:
        fail(str(exc), ExitCode.BUILD_ENDED, exc.hint)
    except SpecError as exc:
        fail(str(exc), ExitCode.SPEC_INVALID, exc.hint)
    except SecretError as exc:
        fail(str(exc), ExitCode.SECRET_ERROR, exc.hint)
    except UnknownBuildError as exc:
        fail(str(exc), ExitCode.UNKNOWN_BUILD, exc.hint)
    except ConcurrencyError as exc:
        fail(str(exc), ExitCode.BUILD_BUSY, exc.hint)
    except DiskFullError as exc:
        fail(str(exc), ExitCode.DISK_FULL, exc.hint)
    except StoreError as exc:
        fail(str(exc), ExitCode.STORE_ERROR, exc.hint)
    except CorruptStreamError as exc:
        fail(
            str(exc),
            ExitCode.VERIFY_FAILED,
            "`gmi-fsm verify ID` checks the hash chain; `gmi-fsm history ID` shows the events",
        )
