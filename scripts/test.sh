#!/usr/bin/env bash
# Installs everything (idempotent) and runs the style check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# tests/test_deploy.py validates docker-compose.yml with `docker-compose config` (Debian's 1.29
# needs no Docker engine). Best effort: without it that one check is skipped, not failed.
if ! command -v docker-compose >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; } \
        >/dev/null 2>&1 || echo "ttalkkac: could not install docker-compose; its check will skip"
fi
# The docs' browser tests drive Debian's chromium (no Playwright browser download). Best effort
# too: without it those tests skip.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
        >/dev/null 2>&1 || echo "ttalkkac: could not install chromium; the browser tests will skip"
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
