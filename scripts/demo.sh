#!/usr/bin/env bash
# The main job: on a fresh Debian machine, install what is needed, make a small
# Debian 12 base disk, and build a real GMI from it on the local QEMU host,
# ending with the VHDX, the package, and the audit report.
#
# Resumable: if it is interrupted, run it again; it resumes the same build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"

export GMI_FSM_DB="${GMI_FSM_DB:-$ROOT/out/events.db}"
mkdir -p "$ROOT/out"

echo "== base disk (built once per machine, then cached)" >&2
gmi-fsm lab base-image --out "$ROOT/.lab"

SPEC="$ROOT/examples/debian-12-qemu.yaml"
# Resume the last unfinished build of this spec, or start one.
BUILD=$(gmi-fsm list --json | python3 -c '
import json, sys
rows = [r for r in json.load(sys.stdin) if r["build_id"].startswith("debian-12-")
        and r["last_event"] not in ("BuildSucceeded", "BuildAborted")]
print(rows[-1]["build_id"] if rows else "")')
if [ -n "$BUILD" ]; then
  echo "== resuming build $BUILD" >&2
  gmi-fsm run --resume "$BUILD"
else
  echo "== building $SPEC" >&2
  gmi-fsm run "$SPEC"
  BUILD=$(gmi-fsm list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["build_id"])')
fi

gmi-fsm verify "$BUILD"
gmi-fsm audit "$BUILD" > "$ROOT/out/audit-$BUILD.md"
echo >&2
echo "== done: build $BUILD" >&2
ls -la "$ROOT/out" >&2
echo "audit report: out/audit-$BUILD.md" >&2
