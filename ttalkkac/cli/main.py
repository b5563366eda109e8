"""The single CLI entry point: ``ttalkkac``."""

from __future__ import annotations

import typer

from ttalkkac.cli import data, evaluate, generate, models, serve, train, up, worker
from ttalkkac.logs import keep_stdout_for_results

app = typer.Typer(
    name="ttalkkac",
    help="Meeting transcripts to structured project plans: data, training, serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    # Before any command loads vLLM: stdout is for the command's result, logs go to stderr.
    keep_stdout_for_results()


app.add_typer(data.app, name="data", help="Inspect and export gold-standard data.")
app.add_typer(models.app, name="models", help="Base models that work offline (demo model).")
app.command("up")(up.up)  # deploy: the one-command launcher
app.command("train")(train.train)  # training: foreground LoRA run
app.command("worker")(worker.worker)  # training: the Celery worker
app.command("generate")(generate.generate)  # serving: a plan for one meeting
app.command("api")(serve.api)  # serving: the HTTP API
app.command("eval")(evaluate.evaluate)  # evaluation: score adapters through the service


if __name__ == "__main__":
    app()
