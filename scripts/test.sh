#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, types, then every test
# (including the real QEMU guest VM tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"

echo "== ruff" >&2
ruff check .
ruff format --check orchestrator states events
echo "== mypy --strict" >&2
mypy
echo "== pytest" >&2
exec python -m pytest -q "$@"
