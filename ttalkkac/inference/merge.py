"""Merged serving's files: an adapter folded into the base weights, and adapters relative to it.

Why: vLLM's CPU build runs LoRA through a PyTorch fallback, 3.5x slower at 16 requests than plain
weights (NOTES). Serving the active adapter merged into the weights removes that cost for the
requests that matter most; every other adapter (and the base model) stays servable exactly.

- ``ensure_merged``: PEFT ``merge_and_unload`` of the adapter into the base, written once as a
  normal model folder next to the adapter (``<adapter>.merged``), with a stamp naming the adapter
  files and base model it was built from. A matching stamp means the folder is reused (also across
  restarts); any change to the adapter's files or the base model rebuilds it. Built in a
  temporary folder and renamed into place under a file lock, so concurrent processes never see a
  half-written model.
- ``relative_adapter``: on weights ``W + dM`` (base plus the merged adapter M), the request for
  adapter T needs ``W + dT``, i.e. the LoRA ``dT - dM``. Both are low-rank, so the difference is
  exactly one LoRA of rank ``r_T + r_M`` (the factors stacked, scalings folded into B). The base
  model itself is ``-dM`` (rank ``r_M``). Written once per pair under the merged folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ttalkkac.adapters import CONFIG_FILE, WEIGHTS_FILE, read_adapter_dir
from ttalkkac.errors import InvalidInput
from ttalkkac.inference.base import AdapterRef
from ttalkkac.locks import file_lock

logger = logging.getLogger(__name__)

MERGED_SUFFIX = ".merged"
STAMP_FILE = "ttalkkac-merge.json"
RELATIVE_DIR = "relative"
BASE_NAME = "base"

_relative_lock = threading.Lock()  # one relative adapter built at a time in this process


def merged_dir_for(adapter: AdapterRef) -> Path:
    return adapter.path.parent / f"{adapter.path.name}{MERGED_SUFFIX}"


def _stamp(base_model: str, adapter: AdapterRef) -> dict[str, Any]:
    base_config = Path(base_model).expanduser() / "config.json"
    digest = hashlib.sha256(base_config.read_bytes()).hexdigest() if base_config.is_file() else None
    return {
        "adapter": adapter.name,
        "adapter_path": str(adapter.path),
        "adapter_sha256": _sha256(adapter.path / WEIGHTS_FILE),
        "base_model": str(base_model),
        "base_config_sha256": digest,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_merged(base_model: str, adapter: AdapterRef) -> Path:
    """The folder of ``base_model`` with ``adapter`` merged in; built only when missing or stale."""
    out = merged_dir_for(adapter)
    with file_lock(out.with_name(f".{out.name}.lock")):
        wanted = _stamp(base_model, adapter)
        if read_stamp(out) == wanted:
            logger.info("reusing merged weights of adapter %r at %s", adapter.name, out)
            return out
        started = time.perf_counter()
        tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            _merge(base_model, adapter.path, tmp)
            (tmp / STAMP_FILE).write_text(json.dumps(wanted, indent=2))
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info(
            "merged adapter %r into %s in %.1f s: %s",
            adapter.name,
            base_model,
            time.perf_counter() - started,
            out,
        )
        return out


def _merge(base_model: str, adapter_dir: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    stored_dtype = model.dtype
    # Merge in float32 and round once to the stored dtype: a bf16 in-place add rounds twice.
    model = model.to(torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload(safe_merge=True)
    merged = merged.to(stored_dtype)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(out)


# --- adapters relative to merged weights ----------------------------------------------------


def relative_adapter(target: AdapterRef | None, merged: AdapterRef, merged_dir: Path) -> AdapterRef:
    """The LoRA that serves ``target`` (None: the base model) on ``merged_dir``'s weights."""
    target_key = f"{target.name}-{target.fingerprint}" if target else BASE_NAME
    folder = merged_dir / RELATIVE_DIR / _safe_name(f"{target_key}--{merged.fingerprint}")
    with _relative_lock:
        if not (folder / WEIGHTS_FILE).is_file():
            _write_relative(target, merged, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    return AdapterRef(
        name=target.name if target else BASE_NAME,
        path=folder,
        base_model=merged.base_model,
        rank=int(config["r"]),
        fingerprint=f"{target.fingerprint if target else BASE_NAME}-{merged.fingerprint}",
    )


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200]


def _factors(adapter: AdapterRef) -> tuple[dict[str, Any], dict[str, tuple[Any, Any, float]]]:
    """The adapter's config and, per module, (A, B, scaling) as PEFT applies them."""
    import math

    from safetensors.torch import load_file

    config = read_adapter_dir(adapter.path)
    unsupported = {
        "use_dora": bool(config.get("use_dora")),
        "bias": config.get("bias", "none") != "none",
        "modules_to_save": bool(config.get("modules_to_save")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
    }
    if any(unsupported.values()):
        used = ", ".join(k for k, v in unsupported.items() if v)
        raise InvalidInput(
            f"adapter {adapter.name!r} uses {used}, which cannot be served relative to merged "
            "weights; serve it with SERVING_MODE=lora or activate it"
        )
    tensors = load_file(adapter.path / WEIGHTS_FILE)
    alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    factors: dict[str, tuple[Any, Any, float]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise InvalidInput(f"adapter {adapter.name!r} holds {key}: only LoRA A/B matrices")
            continue
        module = key.split(".lora_A.")[0]
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        rank = a.shape[0]
        scaling = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        factors[module] = (a.float(), b.float(), scaling)
    return config, factors


def _write_relative(target: AdapterRef | None, merged: AdapterRef, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    merged_config, merged_factors = _factors(merged)
    target_factors = _factors(target)[1] if target else {}
    rank = max((a.shape[0] for a, _, _ in target_factors.values()), default=0) + max(
        a.shape[0] for a, _, _ in merged_factors.values()
    )
    tensors: dict[str, Any] = {}
    for module in sorted(set(target_factors) | set(merged_factors)):
        parts_a, parts_b = [], []
        for factors, sign in ((target_factors, 1.0), (merged_factors, -1.0)):
            if module in factors:
                a, b, scaling = factors[module]
                parts_a.append(a)
                parts_b.append(b * (sign * scaling))
        a = torch.cat(parts_a, dim=0)
        b = torch.cat(parts_b, dim=1)
        pad = rank - a.shape[0]  # zero rows/columns: the same product at one uniform rank
        a = torch.cat([a, a.new_zeros(pad, a.shape[1])], dim=0)
        b = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1)
        tensors[f"{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{module}.lora_B.weight"] = b.contiguous()
    modules = sorted(
        {key.split(".lora_A.")[0].rsplit(".", 1)[-1] for key in tensors if "lora_A" in key}
    )
    config = {
        key: merged_config[key]
        for key in ("base_model_name_or_path", "task_type", "peft_type")
        if key in merged_config
    } | {
        "r": rank,
        "lora_alpha": rank,  # scaling 1: the scalings are folded into B
        "use_rslora": False,
        "target_modules": modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "inference_mode": True,
    }
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
