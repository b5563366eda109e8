"""Merged serving's files: an adapter folded into the base weights.

Why: vLLM's CPU build runs LoRA through a PyTorch fallback, 3.5x slower at 16 requests than plain
weights (NOTES). Serving the active adapter merged into the weights removes that cost for the
requests that matter most.

- ``ensure_merged``: PEFT ``merge_and_unload`` of the adapter into the base, written once as a
  normal model folder next to the adapter (``<adapter>.merged``), with a stamp naming the adapter
  files and base model it was built from. A matching stamp means the folder is reused (also across
  restarts); any change to the adapter's files or the base model rebuilds it. Built in a
  temporary folder and renamed into place under a file lock, so concurrent processes never see a
  half-written model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from ttalkkac.adapters import WEIGHTS_FILE, AdapterRef
from ttalkkac.locks import file_lock

logger = logging.getLogger(__name__)

MERGED_SUFFIX = ".merged"
STAMP_FILE = "ttalkkac-merge.json"


def merged_dir_for(adapter: AdapterRef) -> Path:
    return merged_dir_of(adapter.path)


def merged_dir_of(adapter_dir: Path) -> Path:
    """Where the merged copy of the adapter in ``adapter_dir`` lives: beside it."""
    return adapter_dir.parent / f"{adapter_dir.name}{MERGED_SUFFIX}"


def merge_lock_path(merged_dir: Path) -> Path:
    """The lock held while ``merged_dir`` is built (and, by retention, while it is removed)."""
    return merged_dir.with_name(f".{merged_dir.name}.lock")


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


def built_from(folder: Path, adapter: AdapterRef) -> bool:
    """Whether the merged ``folder`` holds ``adapter``'s current weights (its stamp says so)."""
    stamp = read_stamp(folder)
    weights = adapter.path / WEIGHTS_FILE
    return (
        stamp is not None and weights.is_file() and stamp.get("adapter_sha256") == _sha256(weights)
    )


def ensure_merged(base_model: str, adapter: AdapterRef) -> Path:
    """The folder of ``base_model`` with ``adapter`` merged in; built only when missing or stale."""
    out = merged_dir_for(adapter)
    with file_lock(merge_lock_path(out)):
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
