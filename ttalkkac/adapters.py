"""Which adapter serves a request: names from the registry, checked before any engine sees them.

``AdapterRef`` (an adapter checked and ready to load) is defined here, beside the checks that
make one, and the engines import it from here: the registry does not depend on the inference
layer, which depends on the registry.

- Names are read from the store's adapter registry at request time, so an adapter registered
  while the service runs is usable at once (the engine loads it on first use).
- ``adapter`` omitted or null: the active adapter, else the base model. The reserved name
  ``"base"`` (``BASE``) asks for the base model explicitly, even when an adapter is active.
- Unknown names are ``NotFound`` (404). An adapter trained on another base model than the one
  served is ``Conflict`` (409): its weights would load onto the wrong matrices.
- Adapters load from safetensors only (``adapter_model.safetensors``): a folder with only a
  pickled ``adapter_model.bin`` is refused, since unpickling runs arbitrary code.
- The weights are checked from the safetensors headers before an engine loads them (complete
  file, LoRA matrices that fit the served base model): vLLM's engine process dies on an adapter
  it cannot load, taking every request in flight with it.
- Registry paths must lie inside the managed data folder (``DATA_DIR``; symlinks resolved), so a
  row pointing elsewhere cannot make the service read arbitrary files. Explicit folders given to
  the CLI or the Python API by the person running them are not restricted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ttalkkac.errors import Conflict, InvalidInput, NotFound
from ttalkkac.settings import Settings
from ttalkkac.store import crud

logger = logging.getLogger(__name__)

BASE = "base"  # reserved adapter name: the base model without any adapter
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter ready to load: a safetensors folder that belongs to the served base."""

    name: str
    path: Path
    base_model: str
    rank: int
    # Changes when the files change, so an engine reloads a rebuilt adapter under a new id.
    fingerprint: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, str(self.path), self.fingerprint)


def adapter_key(adapter: AdapterRef | None) -> tuple[str, str, str] | None:
    """What identifies the weights asked for: an adapter's key, None for the base model."""
    return None if adapter is None else adapter.key


# Module names whose LoRA (or full copy) changes the embeddings or the LM head: a reload in
# place loads them but does not re-tie a tied LM head (../shared/NOTES.md), so it would serve
# different weights than a fresh engine on the same folder.
_EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out", "word_embeddings")


def trains_embeddings(adapter: AdapterRef) -> bool:
    """Whether the adapter's config targets or saves an embedding or the LM head."""
    try:
        config = json.loads((Path(adapter.path) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return True  # unknown: take the safe path
    names: list[str] = []
    for key in ("target_modules", "modules_to_save"):
        value = config.get(key) or []
        names += [value] if isinstance(value, str) else list(value)
    return any(module in name for name in names for module in _EMBEDDING_MODULES)


def read_adapter_dir(path: Path | str) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, after checking the folder is loadable."""
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidInput(f"adapter folder {folder} does not exist")
    if not (folder / WEIGHTS_FILE).is_file():
        if (folder / "adapter_model.bin").is_file():
            raise InvalidInput(
                f"adapter folder {folder} holds only adapter_model.bin (pickle); adapters load "
                f"from safetensors only: re-save it with save_pretrained(safe_serialization=True)"
            )
        raise InvalidInput(f"adapter folder {folder} has no {WEIGHTS_FILE}")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError as exc:
        raise InvalidInput(f"adapter folder {folder} has no {CONFIG_FILE}") from exc
    except ValueError as exc:
        raise InvalidInput(f"adapter folder {folder}: {CONFIG_FILE} is not valid JSON") from exc
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidInput(f"adapter folder {folder} is a {config['peft_type']} adapter, not LoRA")
    return config


@lru_cache(maxsize=8)
def _base_shapes(base_dir: str) -> dict[str, list[int]]:
    """Weight shapes of a local base model, from its safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for file in sorted(Path(base_dir).glob("*.safetensors")):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[key] = handle.get_slice(key).get_shape()
    return shapes


@lru_cache(maxsize=256)
def check_adapter_weights(folder: str, fingerprint: str, base_model: str) -> None:
    """The adapter's safetensors are complete and fit the base model's matrices.

    vLLM's engine process dies on an adapter it cannot load (a truncated file, a LoRA for other
    shapes), failing every request in flight; checked here instead, from the file headers.
    ``fingerprint`` keys the cache, so a rewritten adapter is checked again.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(Path(folder) / WEIGHTS_FILE, "pt") as handle:
            shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise InvalidInput(f"adapter weights in {folder} are unreadable: {exc}") from exc
    if not any(".lora_A." in key for key in shapes):
        raise InvalidInput(f"adapter weights in {folder} hold no LoRA matrices")
    base_dir = Path(base_model).expanduser()
    if not base_dir.is_dir():
        return  # a hub id: its shapes are not known locally
    base = _base_shapes(str(base_dir.resolve()))
    if not base:
        return
    for key, shape in shapes.items():
        for part, side in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module = key.split(part)[0].removeprefix("base_model.model.")
            target = base.get(f"{module}.weight")
            if target is None:
                raise InvalidInput(
                    f"adapter in {folder} targets {module}, which the base model does not have"
                )
            if len(target) != 2 or shape[side] != target[side]:
                raise InvalidInput(
                    f"adapter in {folder} does not fit the base model: {key} has shape {shape}, "
                    f"the base weight {module}.weight has {target}"
                )


def config_rank(config: dict[str, Any]) -> int:
    ranks = [
        int(config.get("r") or 8),
        *(int(r) for r in (config.get("rank_pattern") or {}).values()),
    ]
    return max(ranks)


def fingerprint(folder: Path) -> str:
    stat = (folder / WEIGHTS_FILE).stat()
    return hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def _normalize(model: str) -> str:
    path = Path(model).expanduser()
    if path.is_absolute() or path.exists():
        return str(path.resolve())
    return model.strip().rstrip("/").casefold()


def _config_digest(model: str) -> str | None:
    config = Path(model).expanduser() / "config.json"
    try:
        return hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        return None


def same_base_model(a: str, b: str) -> bool:
    """Whether two base model references (hub ids or folders) name the same weights.

    Equal after normalization (resolved paths; ids case-insensitive), or two folders whose
    ``config.json`` files are identical (the same model copied to another path or volume).
    """
    if _normalize(a) == _normalize(b):
        return True
    digest = _config_digest(a)
    return digest is not None and digest == _config_digest(b)


def ensure_managed(path: Path | str, settings: Settings) -> Path:
    """The resolved path, if it lies inside DATA_DIR; ``InvalidInput`` otherwise."""
    resolved = Path(path).expanduser().resolve()
    root = settings.data_dir.resolve()
    if not resolved.is_relative_to(root):
        raise InvalidInput(
            f"adapter path {path} lies outside the managed data folder {root}; "
            f"register adapters trained by the service or copied under {root}"
        )
    return resolved


def ref_from_dir(
    path: Path | str, *, name: str | None = None, base_model: str | None = None
) -> AdapterRef:
    """An adapter given as a folder (CLI, Python API): base model and rank from its config."""
    folder = Path(path).expanduser().resolve()
    config = read_adapter_dir(folder)
    base = base_model or config.get("base_model_name_or_path") or ""
    return AdapterRef(
        name=name or folder.name,
        path=folder,
        base_model=str(base),
        rank=config_rank(config),
        fingerprint=fingerprint(folder),
    )


def ref_from_row(row: Any, settings: Settings, served_base_model: str) -> AdapterRef:
    """Check a registry row (managed path, safetensors, base model) and make it servable."""
    folder = ensure_managed(row.path, settings)
    config = read_adapter_dir(folder)
    check_base(row.name, row.base_model, served_base_model)
    stamp = fingerprint(folder)
    check_adapter_weights(str(folder), stamp, served_base_model)
    return AdapterRef(
        name=row.name,
        path=folder,
        base_model=row.base_model,
        rank=max(int(row.rank or 0), config_rank(config)),
        fingerprint=stamp,
    )


def check_base(name: str, adapter_base: str, served_base_model: str) -> None:
    if adapter_base and not same_base_model(adapter_base, served_base_model):
        raise Conflict(
            f"adapter {name!r} was trained on base model {adapter_base!r}, but this service "
            f"serves {served_base_model!r}; serve that base model (BASE_MODEL) to use it",
            detail={"adapter_base_model": adapter_base, "served_base_model": served_base_model},
        )


def resolve_adapter(
    session: Session, settings: Settings, *, name: str | None, served_base_model: str
) -> AdapterRef | None:
    """The adapter a request asks for; ``None`` means the base model.

    ``name`` None: the active adapter, else the base model. ``"base"``: the base model.
    """
    if name == BASE:
        return None
    if name is None:
        row = crud.get_active_adapter(session)
        if row is None:
            return None
    else:
        row = crud.get_adapter(session, name=name)
        if row is None:
            raise NotFound(f"no adapter named {name!r} (GET /adapters lists them)")
    return ref_from_row(row, settings, served_base_model)


def resolve_local_adapter(
    value: str | None, settings: Settings, *, served_base_model: str
) -> AdapterRef | None:
    """For the CLI and the Python API: a folder path, a registry name, ``"base"`` or None.

    None means the registry's active adapter when a registry exists, else the base model.
    """
    if value == BASE:
        return None
    if value is not None and (Path(value).expanduser().is_dir() or "/" in value):
        ref = ref_from_dir(value)
        check_base(ref.name, ref.base_model, served_base_model)
        check_adapter_weights(str(ref.path), ref.fingerprint, served_base_model)
        return ref
    db_file = settings.data_dir / "ttalkkac.db"
    if settings.database_url is None and not db_file.exists():
        if value is None:
            return None
        raise NotFound(f"no adapter folder {value!r} and no adapter registry at {db_file}")
    from ttalkkac.store.db import Database

    db = Database(settings.resolved_database_url)
    try:
        db.create_all()
        with db.session() as session:
            return resolve_adapter(
                session, settings, name=value, served_base_model=served_base_model
            )
    finally:
        db.dispose()
