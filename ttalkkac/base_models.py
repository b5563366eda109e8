"""Which base models a training request may name: an allowlist, plus the managed models folder.

A request's ``base_model`` makes a worker load that model: a hub id is downloaded with the
operator's token, and a folder is read from the server's disk. Without a limit any client with a
key could make the workers download arbitrary repositories, or load an uploaded dataset's folder
as a model. Allowed: the entries of ALLOWED_BASE_MODELS (default: the models this service is
configured with) and folders holding a ``config.json`` inside the managed models folder.
No heavy imports: the API checks requests with it.
"""

from __future__ import annotations

from pathlib import Path

from ttalkkac.demo_model import demo_model_path
from ttalkkac.errors import InvalidInput
from ttalkkac.settings import Settings


def allowed_base_models(settings: Settings) -> list[str]:
    """ALLOWED_BASE_MODELS, or by default BASE_MODEL, GPU_BASE_MODEL and the demo model."""
    if settings.allowed_base_models:
        candidates = list(settings.allowed_base_models)
    else:
        demo = str(demo_model_path(settings.models_dir))
        candidates = [m for m in (settings.base_model, settings.gpu_base_model, demo) if m]
    return list(dict.fromkeys(candidates))


def _as_paths(value: str, settings: Settings) -> list[Path]:
    """Where ``value`` could point: itself (absolute or from the working folder) and a name
    inside the managed models folder."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return [path.resolve()]
    return [path.resolve(), (settings.models_dir / path).resolve()]


def _shown(entry: str, models: Path) -> str:
    """An allowed value as a client may send it: a folder inside the models folder by its
    name there (accepted as input, and no server path in the answer)."""
    path = Path(entry).expanduser()
    if path.is_absolute() and path.resolve().is_relative_to(models):
        return str(path.resolve().relative_to(models))
    return entry


def check_base_model(value: str, settings: Settings) -> str:
    """The base model a job may use for ``value``, or ``InvalidInput`` naming what is allowed.

    An allowlisted entry is returned as configured; a managed folder as its resolved path.
    """
    allowed = allowed_base_models(settings)
    if value in allowed:
        return value
    models = settings.models_dir.resolve()
    try:
        candidates = _as_paths(value, settings)
        for entry in allowed:
            entry_path = Path(entry).expanduser()
            if entry_path.is_absolute() and entry_path.resolve() in candidates:
                return entry
        for path in candidates:
            # resolve() followed links: a link inside the folder pointing out of it is refused.
            if path != models and path.is_relative_to(models) and (path / "config.json").is_file():
                return str(path)
    except (OSError, ValueError):  # a name no filesystem takes (too long, NUL): not a folder
        pass
    shown = [_shown(entry, models) for entry in allowed]
    raise InvalidInput(
        f"base_model {value!r} is not allowed: use one of {', '.join(map(repr, shown))} "
        "(ALLOWED_BASE_MODELS) or a model folder with a config.json inside the managed models "
        "folder (DATA_DIR/models), by its name there",
        detail=[
            {
                "field": "body.base_model",
                "message": "not an allowed base model",
                "allowed": shown,
            }
        ],
    )
