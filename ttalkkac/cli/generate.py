"""``ttalkkac generate``: a plan for one meeting file, in-process or from a running service."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class Format(StrEnum):
    json = "json"
    markdown = "markdown"
    notion = "notion"


class EngineChoice(StrEnum):
    vllm = "vllm"
    transformers = "transformers"


def read_meeting(path: Path) -> str | list[dict[str, Any]]:
    """A meeting file: a JSON utterance list (like ``05_final_result.json``) or plain text."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            return text  # a transcript that merely starts with "[00:01] ..."
        if isinstance(value, list):
            return value
    return text


def generate(
    meeting: Annotated[
        Path,
        typer.Option(
            "--meeting",
            "-m",
            help="Meeting file: plain text or a JSON utterance list ('-': stdin).",
            allow_dash=True,
        ),
    ],
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Adapter folder or registry name; 'base' for the base model. Default: the "
            "registry's active adapter, else the base model."
        ),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(help="Base model id or folder (default: BASE_MODEL, else the demo model)."),
    ] = None,
    engine: Annotated[
        EngineChoice | None,
        typer.Option(help="Engine for in-process generation (default: SERVING_ENGINE)."),
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", "-f", help="json: the validated plan object.")
    ] = Format.json,
    url: Annotated[
        str | None,
        typer.Option(help="Ask a running service (e.g. http://127.0.0.1:8000) instead."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TTALKKAC_API_KEY", help="Bearer token for --url.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=16, help="Answer budget.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2)] = None,
) -> None:
    """Generate a project plan for a meeting and print it to stdout."""
    if str(meeting) != "-" and not meeting.is_file():
        typer.echo(f"error: meeting file {meeting} not found", err=True)
        raise typer.Exit(2)
    content = read_meeting(meeting)
    if url:
        if base_model or engine:
            typer.echo("note: --base-model/--engine are the service's choice with --url", err=True)
        _print(*_remote(url, content, adapter, output_format, api_key, max_tokens, temperature))
        return
    _print(*_local(content, adapter, base_model, engine, output_format, max_tokens, temperature))


def _local(
    content: Any,
    adapter: str | None,
    base_model: str | None,
    engine: EngineChoice | None,
    output_format: Format,
    max_tokens: int | None,
    temperature: float | None,
) -> tuple[Format, Any]:
    from ttalkkac.errors import TtalkkacError
    from ttalkkac.inference.client import TtalkkacInference
    from ttalkkac.render import to_markdown, to_notion_page

    inference = TtalkkacInference(
        base_model=base_model,
        adapter=adapter,
        engine=engine.value if engine else None,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    try:
        result = inference.load_model().generate(content)
    except TtalkkacError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if exc.detail:
            typer.echo(json.dumps(exc.detail, ensure_ascii=False, indent=2), err=True)
        raise typer.Exit(1) from exc
    finally:
        inference.close()
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"adapter={result.adapter or 'base'} engine={result.engine} chunks={result.chunks} "
        f"usage={result.usage} timings={result.timings}",
        err=True,
    )
    if output_format is Format.markdown:
        return output_format, to_markdown(result.plan)
    if output_format is Format.notion:
        return output_format, to_notion_page(result.plan)
    return output_format, result.plan.model_dump()


def _remote(
    url: str,
    content: Any,
    adapter: str | None,
    output_format: Format,
    api_key: str | None,
    max_tokens: int | None,
    temperature: float | None,
) -> tuple[Format, Any]:
    import httpx

    from ttalkkac.logs import redact_url

    body: dict[str, Any] = {"meeting": content}
    for key, value in (("adapter", adapter), ("max_tokens", max_tokens)):
        if value is not None:
            body[key] = value
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/generate",
            params={"format": output_format.value},
            json=body,
            headers=headers,
            timeout=httpx.Timeout(30.0, read=900.0),
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: could not reach {redact_url(url)}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        try:
            error = response.json()["error"]
            message = f"{error['message']} ({error['code']})"
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        typer.echo(f"error: HTTP {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    if output_format is Format.markdown:
        return output_format, response.text
    data = response.json()
    return output_format, data if output_format is Format.notion else data["plan"]


def _print(output_format: Format, value: Any) -> None:
    if output_format is Format.markdown:
        typer.echo(value, nl=not str(value).endswith("\n"))
    else:
        typer.echo(json.dumps(value, ensure_ascii=False, indent=2))
