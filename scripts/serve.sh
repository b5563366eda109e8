#!/usr/bin/env bash
# The README's first command: install (idempotent: a re-run reuses .venv/) and start the whole
# service with `ttalkkac up` (API + vLLM engine on the CPU, training worker, SQLite store, local
# Redis or the embedded broker). Arguments go to `ttalkkac up` (--port, --host, --no-worker, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/ttalkkac up "$@"
