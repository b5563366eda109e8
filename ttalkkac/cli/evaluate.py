"""``ttalkkac eval``: score adapters against gold plans through a running service.

    ttalkkac eval --adapter my-adapter --dataset ../shared/data
    ttalkkac eval --compare base my-adapter --dataset ds_0123456789abcdef

The evaluation runs in the service (``POST /evaluations``: the serving engine, durable rows);
this command submits it, shows its progress, prints the scores and writes a report folder
(``report.md`` + ``scores.png``). A dataset given as a folder is zipped and uploaded first.
Only the result goes to stdout (the table, or JSON with ``--json``); progress goes to stderr.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}


class ApiError(Exception):
    pass


class _Api:
    def __init__(self, url: str, api_key: str | None, timeout_s: float = 60) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the service at {self.client.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
                message = error.get("message") or response.text
            except ValueError:
                message = response.text
            raise ApiError(f"{method} {path}: {response.status_code}: {message}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


def zip_folder(folder: Path) -> bytes:
    """The folder as a zip (what ``POST /datasets`` takes), paths relative to the folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def dataset_id_for(api: _Api, dataset: str, echo: Any) -> str:
    folder = Path(dataset).expanduser()
    if not folder.is_dir():
        return dataset  # a dataset id
    echo(f"uploading {folder} as a dataset ...")
    body = api.json(
        "POST",
        "/datasets",
        files={"file": (f"{folder.name or 'dataset'}.zip", zip_folder(folder), "application/zip")},
        data={"name": folder.name or "dataset"},
        timeout=600,
    )
    echo(f"dataset {body['id']}: {body.get('stats', {}).get('records', '?')} records")
    return body["id"]


def wait_all(api: _Api, ids: list[str], *, poll_s: float, console: Any) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as progress:
        while True:
            current = [api.json("GET", f"/evaluations/{i}") for i in ids]
            for evaluation in current:
                done = evaluation["progress"]["step"]
                total = evaluation["progress"]["total_steps"] or evaluation["max_samples"]
                if evaluation["id"] not in bars:
                    bars[evaluation["id"]] = progress.add_task(
                        f"{evaluation['adapter']} ({evaluation['id']})", total=total, status=""
                    )
                progress.update(
                    bars[evaluation["id"]], completed=done, total=total, status=evaluation["status"]
                )
            if all(e["status"] in TERMINAL for e in current):
                return current
            time.sleep(poll_s)


def scores_table(evaluations: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    from ttalkkac.plan import PLAN_FIELDS

    table = Table(title="Scores against the gold plans")
    table.add_column("")
    for evaluation in evaluations:
        table.add_column(f"{evaluation['adapter']}\n{evaluation['id']}", justify="right")
    if len(evaluations) == 2:
        table.add_column("delta", justify="right")
    table.add_column("generic floor", justify="right")
    summaries = [e.get("summary") or {} for e in evaluations]
    floor = summaries[0].get("generic_floor") or {}

    def row(label: str, values: list[Any], floor_value: Any, digits: int) -> None:
        cells = ["-" if v is None else f"{v:.{digits}f}" for v in values]
        if len(values) == 2:
            a, b = values
            cells.append("-" if a is None or b is None else f"{b - a:+.{digits}f}")
        cells.append("-" if floor_value is None else f"{floor_value:.{digits}f}")
        table.add_row(label, *cells)

    for key, digits in (("field_chrf", 1), ("valid_rate", 2), ("grounding", 3)):
        row(key, [s.get(key) for s in summaries], floor.get(key), digits)
    for name in PLAN_FIELDS:
        row(
            f"  {name}",
            [(s.get("fields") or {}).get(name) for s in summaries],
            (floor.get("fields") or {}).get(name),
            1,
        )
    return table


def write_report(api: _Api, evaluations: list[dict[str, Any]], out: Path) -> Path:
    from ttalkkac.evaluation.report import compare_markdown, report_markdown, scores_plot_png

    out.mkdir(parents=True, exist_ok=True)
    full = [api.json("GET", f"/evaluations/{e['id']}") for e in evaluations]
    parts = []
    if len(full) == 2:
        parts.append(f"# {full[0]['adapter']} vs {full[1]['adapter']}\n\n")
        parts.append(compare_markdown(full[0], full[1]) + "\n![per-field scores](scores.png)\n\n")
    parts += [report_markdown(e, plot_name=None if len(full) == 2 else "scores.png") for e in full]
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    (out / "scores.png").write_bytes(scores_plot_png(full))
    (out / "evaluations.json").write_text(
        json.dumps(full, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return out / "report.md"


def evaluate(
    dataset: Annotated[str, typer.Option(help="Dataset id, or a gold-standard folder to upload.")],
    adapter: Annotated[
        str | None, typer.Option(help='Adapter name, or "base" for the base model.')
    ] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(help="Two adapters (or base) on the same data, side by side with deltas."),
    ] = None,
    url: Annotated[str, typer.Option(help="The running service.")] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option(envvar="TTALKKAC_API_KEY", help="Bearer key (API_KEYS).")
    ] = None,
    split: Annotated[str, typer.Option(help="validation or all.")] = "validation",
    max_samples: Annotated[int, typer.Option(min=1, max=500)] = 24,
    max_meeting_chars: Annotated[int | None, typer.Option(min=200)] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Report folder. Default: ./eval-<evaluation id>.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the evaluations as JSON.")] = False,
    poll_s: Annotated[float, typer.Option(min=0.1)] = 2.0,
) -> None:
    """Score adapters against a dataset's gold plans (runs in the service) and report."""
    from rich.console import Console

    names = list(compare) if compare else ([adapter] if adapter else [])
    if not names:
        raise typer.BadParameter("give --adapter NAME or --compare A B")
    err = Console(stderr=True)
    api = _Api(url, api_key or os.environ.get("TTALKKAC_API_KEY"))
    try:
        dataset_id = dataset_id_for(api, dataset, err.print)
        ids = []
        for name in names:
            body = {"adapter": name, "dataset_id": dataset_id, "split": split}
            body |= {"max_samples": max_samples, "seed": seed}
            if max_meeting_chars:
                body["max_meeting_chars"] = max_meeting_chars
            created = api.json("POST", "/evaluations", json=body)
            err.print(f"evaluation {created['id']} queued: {name} on {dataset_id}")
            ids.append(created["id"])
        evaluations = wait_all(api, ids, poll_s=poll_s, console=err)
        report = write_report(api, evaluations, out or Path(f"eval-{ids[-1]}"))
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(evaluations, ensure_ascii=False, indent=2))
    else:
        Console().print(scores_table(evaluations))
    err.print(f"report: {report}")
    failed = [e for e in evaluations if e["status"] != "succeeded"]
    for evaluation in failed:
        error = evaluation.get("error") or {}
        err.print(f"[red]{evaluation['id']} {evaluation['status']}[/red]: {error.get('message')}")
    if failed:
        raise typer.Exit(1)
