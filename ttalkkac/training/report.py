"""What a run leaves behind besides the adapter: results JSON, log history, loss curve."""

from __future__ import annotations

import json
import logging
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

# A run's folder: the adapter and these files; ``checkpoints/`` while it trains (resumes read it).
RESULTS_FILE = "training_results.json"
LOG_HISTORY_FILE = "log_history.json"
LOSS_PLOT_FILE = "loss.png"

_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def json_safe(value: Any) -> Any:
    """NaN and infinities become None; everything else as JSON can hold it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(path)  # readers (the API) never see a half-written file


def loss_curves(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    val = [
        (int(e["step"]), float(e["eval_loss"]))
        for e in log_history
        if "eval_loss" in e and "step" in e
    ]
    return {"train": train, "val": val}


def plot_loss(log_history: list[dict[str, Any]], path: Path | BinaryIO, *, title: str = "") -> None:
    """Train and validation loss against optimizer steps, as a PNG (a file or a stream)."""
    # A Figure on the Agg canvas, not pyplot: pyplot's global state is not safe from the API's
    # threads (two plots drawn at once), and servers have no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = loss_curves(log_history)
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, points, style in (
        ("train loss", curves["train"], "-o"),
        ("validation loss", curves["val"], "-s"),
    ):
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, style, markersize=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(title or "LoRA fine-tuning loss")
    ax.grid(True, alpha=0.3)
    if curves["train"] or curves["val"]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center")
    fig.tight_layout()
    if isinstance(path, Path):
        tmp = path.with_name(path.name + ".tmp.png")
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    else:
        fig.savefig(path, format="png")
